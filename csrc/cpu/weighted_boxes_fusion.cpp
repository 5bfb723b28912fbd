// Weighted boxes fusion (Solovyev et al., 2021), ensemble-boxes' clustering exactly: per label,
// boxes in decreasing weighted score join the cluster whose running fused box has the highest
// IoU with them, if that IoU is > iou_thr, else start a cluster.
//
// ensemble-boxes compares each box with every cluster of its label (O(n * clusters)). Here the
// clusters sit in a grid of their centres, and a box looks only at the cells within reach: an
// IoU > t needs the centres closer than w * (1 - t) in x for t >= 1/2 (w the box's width),
// w * (1/t - 1) / 2 for t < 1/2 (the cluster's width is within (t w, w / t)), and always closer
// than half the widths' sum. The best match is the same as a full scan's (highest IoU, lowest
// cluster on ties), so results are identical; the floor is the sort, O(n log n).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "fastdet/ops.h"
#include "fastdet/wbf.h"
#include "parallel.h"

namespace fastdet::cpu {
namespace {

struct Item {
  double box[4];  // swapped into order and clipped to [0, 1]
  double ws;      // score * model weight
  double w;       // model weight
  int64_t label;
  int64_t pos;  // input position
  int32_t model;
};

struct Result {
  double box[4];
  double score;
  int64_t label;
  int64_t first;
};

// How far, as a multiple of a box's width (height), the centre of a cluster with IoU > t can
// be; t is lowered by 1e-12 so a computed IoU a few ulps above the true one is still covered.
double reach(double t) {
  t -= 1e-12;
  if (t >= 0.5) return 1.0 - t;
  if (t > 0.0) return (1.0 / t - 1.0) * 0.5;
  return std::numeric_limits<double>::infinity();
}

// The grid: clusters in doubly linked lists, one per cell, moved when their centre's cell
// changes (a fused box moves as boxes join).
class Grid {
 public:
  Grid(const Item* it, int64_t n) {
    double sw = 0, sh = 0;
    for (int64_t i = 0; i < n; ++i) {
      sw += it[i].box[2] - it[i].box[0];
      sh += it[i].box[3] - it[i].box[1];
    }
    // Cells half the mean box size: a query (centres within ~w / 2 at the default threshold)
    // spans a few cells. At most ~2 cells per box; a small label is one cell (a plain scan).
    double gx = std::clamp(2.0 * double(n) / std::max(sw, 1e-12), 1.0, 4096.0);
    double gy = std::clamp(2.0 * double(n) / std::max(sh, 1e-12), 1.0, 4096.0);
    const double cap = n <= 32 ? 1.0 : 2.0 * double(n) + 16.0;
    if (gx * gy > cap) {
      const double f = std::sqrt(cap / (gx * gy));
      gx = std::max(1.0, gx * f);
      gy = std::max(1.0, gy * f);
    }
    nx_ = int(gx);
    ny_ = int(gy);
    head_.assign(size_t(nx_) * ny_, -1);
    next_.resize(n);
    prev_.resize(n);
    cell_.resize(n);
  }

  int ix(double x) const { return std::clamp(int(std::floor(x * nx_)), 0, nx_ - 1); }
  int iy(double y) const { return std::clamp(int(std::floor(y * ny_)), 0, ny_ - 1); }
  int cell_of(const double* b) const {
    return ix((b[0] + b[2]) * 0.5) + nx_ * iy((b[1] + b[3]) * 0.5);
  }

  void insert(int c, int cell) {
    cell_[c] = cell;
    prev_[c] = -1;
    next_[c] = head_[cell];
    if (head_[cell] >= 0) prev_[head_[cell]] = c;
    head_[cell] = c;
  }
  void move(int c, int cell) {
    if (cell == cell_[c]) return;
    const int old = cell_[c];
    if (prev_[c] >= 0)
      next_[prev_[c]] = next_[c];
    else
      head_[old] = next_[c];
    if (next_[c] >= 0) prev_[next_[c]] = prev_[c];
    insert(c, cell);
  }

  // The cluster with the highest IoU > t with b (lowest index on ties), or -1.
  template <typename F> int best(const double* b, double rx, double ry, double t, F&& cluster) {
    const double cx = (b[0] + b[2]) * 0.5, cy = (b[1] + b[3]) * 0.5;
    const int x0 = ix(cx - rx), x1 = ix(cx + rx), y0 = iy(cy - ry), y1 = iy(cy + ry);
    int arg = -1;
    double top = t;
    for (int y = y0; y <= y1; ++y)
      for (int x = x0; x <= x1; ++x)
        for (int c = head_[x + nx_ * y]; c >= 0; c = next_[c]) {
          const double o = wbf::iou(cluster(c).box, b);
          if (o > top || (o == top && arg >= 0 && c < arg)) {
            top = o;
            arg = c;
          }
        }
    return arg;
  }

 private:
  int nx_ = 1, ny_ = 1;
  std::vector<int> head_, next_, prev_, cell_;
};

// Clusters one label's items (sorted by decreasing weighted score) into out; returns the count.
int64_t fuse_label(const Item* it, int64_t n, const double* weights, int64_t n_models,
                   double weight_sum, double weight_max, double iou_thr, int conf_type,
                   bool allows_overflow, Result* out) {
  std::vector<wbf::Cluster> cl;
  std::vector<int> assign(n);
  Grid grid(it, n);
  const double f = reach(iou_thr);
  const double slack = 1e-9;  // centres are rounded; coordinates are in [0, 1]
  double max_w = 0, max_h = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double* b = it[i].box;
    const double w = b[2] - b[0], h = b[3] - b[1];
    const double rx = std::min(w * f, (w + max_w) * 0.5) + slack;
    const double ry = std::min(h * f, (h + max_h) * 0.5) + slack;
    int c = grid.best(b, rx, ry, iou_thr, [&](int k) -> const wbf::Cluster& { return cl[k]; });
    if (c < 0) {
      c = int(cl.size());
      cl.emplace_back();
      wbf::start(cl[c], b, it[i].ws, it[i].w, it[i].pos);
      grid.insert(c, grid.cell_of(b));
    } else {
      wbf::join(cl[c], b, it[i].ws, it[i].w);
      grid.move(c, grid.cell_of(cl[c].box));
    }
    max_w = std::max(max_w, cl[c].box[2] - cl[c].box[0]);
    max_h = std::max(max_h, cl[c].box[3] - cl[c].box[1]);
    assign[i] = c;
  }

  const int64_t m = int64_t(cl.size());
  std::vector<double> model_wsum(m, 0.0), absent_wsum(m, 0.0);
  if (conf_type == wbf::kBoxAndModelAvg || conf_type == wbf::kAbsentModelAwareAvg) {
    // The distinct models of each cluster, summed in model order as np.unique gives them.
    std::vector<int64_t> start(m + 1, 0);
    for (int64_t i = 0; i < n; ++i) ++start[assign[i] + 1];
    for (int64_t c = 0; c < m; ++c) start[c + 1] += start[c];
    std::vector<int32_t> models(n);
    std::vector<int64_t> fill(start.begin(), start.end() - 1);
    for (int64_t i = 0; i < n; ++i) models[fill[assign[i]]++] = it[i].model;
    std::vector<char> present(n_models, 0);
    for (int64_t c = 0; c < m; ++c) {
      int32_t* a = models.data() + start[c];
      int32_t* e = models.data() + start[c + 1];
      std::sort(a, e);
      e = std::unique(a, e);
      double s = 0;
      for (int32_t* p = a; p < e; ++p) s += weights[*p];
      model_wsum[c] = s;
      if (conf_type == wbf::kAbsentModelAwareAvg) {
        for (int32_t* p = a; p < e; ++p) present[*p] = 1;
        double r = 0;
        for (int64_t k = 0; k < n_models; ++k)
          if (!present[k]) r += weights[k];
        absent_wsum[c] = r;
        for (int32_t* p = a; p < e; ++p) present[*p] = 0;
      }
    }
  }
  for (int64_t c = 0; c < m; ++c) {
    Result& r = out[c];
    for (int k = 0; k < 4; ++k) r.box[k] = cl[c].box[k];
    r.score = wbf::final_score(cl[c], conf_type, allows_overflow, n_models, model_wsum[c],
                               absent_wsum[c], weight_sum, weight_max);
    r.label = it[0].label;
    r.first = cl[c].first;
  }
  return m;
}

}  // namespace

int64_t weighted_boxes_fusion(const double* boxes, const double* scores, const int64_t* labels,
                              const int64_t* models, const uint8_t* skip, int64_t n,
                              const double* weights, int64_t n_models, double weight_sum,
                              double weight_max, double iou_thr, int conf_type,
                              bool allows_overflow, double* out_boxes, double* out_scores,
                              int64_t* out_labels) {
  std::vector<Item> items;
  items.reserve(n);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t m = models[i];
    if (m < 0 || m >= n_models) return kBadIndex;
    if (!std::isfinite(scores[i])) return kNonFinite;
    double b[4];
    for (int k = 0; k < 4; ++k) {
      b[k] = boxes[4 * i + k];
      if (!std::isfinite(b[k])) return kNonFinite;
    }
    if (skip[i]) continue;
    // ensemble-boxes' prefilter: swap inverted sides, clip to [0, 1], drop zero areas.
    if (b[2] < b[0]) std::swap(b[0], b[2]);
    if (b[3] < b[1]) std::swap(b[1], b[3]);
    for (int k = 0; k < 4; ++k) b[k] = std::min(std::max(b[k], 0.0), 1.0);
    if ((b[2] - b[0]) * (b[3] - b[1]) == 0.0) continue;
    Item it;
    for (int k = 0; k < 4; ++k) it.box[k] = b[k];
    it.ws = scores[i] * weights[m];
    it.w = weights[m];
    it.label = labels[i];
    it.pos = i;
    it.model = int32_t(m);
    items.push_back(it);
  }
  // Label, then decreasing weighted score, ties in input order (ensemble-boxes' argsort is
  // unstable there: its order of tied scores is unspecified).
  std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    if (a.label != b.label) return a.label < b.label;
    if (a.ws != b.ws) return a.ws > b.ws;
    return a.pos < b.pos;
  });
  std::vector<int64_t> seg;  // label segment starts, then the end
  for (int64_t i = 0; i < int64_t(items.size()); ++i)
    if (i == 0 || items[i].label != items[i - 1].label) seg.push_back(i);
  const int64_t nseg = int64_t(seg.size());
  seg.push_back(int64_t(items.size()));
  // Largest labels first, so the dynamic schedule balances.
  std::vector<int64_t> order(nseg);
  for (int64_t s = 0; s < nseg; ++s) order[s] = s;
  std::sort(order.begin(), order.end(),
            [&](int64_t a, int64_t b) { return seg[a + 1] - seg[a] > seg[b + 1] - seg[b]; });
  std::vector<Result> res(items.size());
  std::vector<int64_t> count(nseg);
#pragma omp parallel for schedule(dynamic, 1) \
    num_threads(threads_for(int64_t(items.size()), 1 << 14))
  for (int64_t k = 0; k < nseg; ++k) {
    const int64_t s = order[k];
    count[s] = fuse_label(items.data() + seg[s], seg[s + 1] - seg[s], weights, n_models, weight_sum,
                          weight_max, iou_thr, conf_type, allows_overflow, res.data() + seg[s]);
  }
  int64_t total = 0;
  for (int64_t s = 0; s < nseg; ++s)
    for (int64_t c = 0; c < count[s]; ++c) res[total++] = res[seg[s] + c];
  res.resize(total);
  // Decreasing score, ties by the cluster's first box in input order.
  std::sort(res.begin(), res.end(), [](const Result& a, const Result& b) {
    if (a.score != b.score) return a.score > b.score;
    return a.first < b.first;
  });
  for (int64_t r = 0; r < total; ++r) {
    for (int k = 0; k < 4; ++k) out_boxes[4 * r + k] = res[r].box[k];
    out_scores[r] = res[r].score;
    out_labels[r] = res[r].label;
  }
  return total;
}

// The clustering alone, on boxes already filtered and sorted (label, decreasing weighted score)
// with label segments seg [nseg + 1]: every box against every cluster of its segment, as the
// CUDA kernel does. Cluster c of segment s is row seg[s] + c of the outputs; ncl[s] clusters.
void wbf_cluster(const double* boxes, const double* ws, const double* w, const int64_t* pos,
                 const int64_t* seg, int64_t nseg, double iou_thr, int conf_type, double* out_boxes,
                 double* out_s, double* out_w, int64_t* out_count, int64_t* out_first, int64_t* ncl,
                 int64_t* assign) {
#pragma omp parallel for schedule(dynamic, 1) \
    num_threads(threads_for(nseg ? seg[nseg] : 0, 1 << 14))
  for (int64_t s = 0; s < nseg; ++s) {
    std::vector<wbf::Cluster> cl;
    for (int64_t i = seg[s]; i < seg[s + 1]; ++i) {
      const double* b = boxes + 4 * i;
      int64_t arg = -1;
      double top = iou_thr;
      for (int64_t c = 0; c < int64_t(cl.size()); ++c) {
        const double o = wbf::iou(cl[c].box, b);
        if (o > top) {
          top = o;
          arg = c;
        }
      }
      if (arg < 0) {
        arg = int64_t(cl.size());
        cl.emplace_back();
        wbf::start(cl.back(), b, ws[i], w[i], pos[i]);
      } else {
        wbf::join(cl[arg], b, ws[i], w[i]);
      }
      assign[i] = arg;
    }
    for (int64_t c = 0; c < int64_t(cl.size()); ++c) {
      const int64_t r = seg[s] + c;
      for (int k = 0; k < 4; ++k) out_boxes[4 * r + k] = cl[c].box[k];
      out_s[r] = wbf::stored_score(cl[c], conf_type);
      out_w[r] = wbf::stored_weight(cl[c]);
      out_count[r] = cl[c].count;
      out_first[r] = cl[c].first;
    }
    ncl[s] = int64_t(cl.size());
  }
}

}  // namespace fastdet::cpu
