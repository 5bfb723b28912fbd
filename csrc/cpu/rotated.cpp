// box_iou_rotated and nms_rotated (plain or per class): rotated boxes [n, 5] (cx, cy, w, h, angle
// in degrees); the geometry is fastdet/rotated.h, shared with the GPU.
//
// box_iou_rotated: each box's trigonometry once, then per row a branch-free pass over the
// bounding circles; only pairs whose circles overlap are clipped (on detection-like inputs a
// few percent). Floor: the n*m output write plus the clipping of the overlapping pairs.
// nms: greedy in decreasing score (ties: lower index first). A box is compared only with the
// kept boxes whose axis-aligned bounding boxes overlap its own, found through a grid of cells.
#include "fastdet/rotated.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "nms.h"
#include "parallel.h"

namespace fastdet::cpu {
namespace {

template <typename T> std::vector<RBox<T>> prepare(const T* b, int64_t n) {
  std::vector<RBox<T>> out(n);
  for (int64_t i = 0; i < n; ++i) out[i] = make_rbox(b + 5 * i);
  return out;
}

// One row of the IoU matrix: circles tested for every column, compacted without branches,
// then clipped. The test is rotated_iou's own, so the values are rotated_iou's (and the GPU's).
template <typename T>
void iou_row(const RBox<T>& a, const std::vector<RBox<T>>& b, const std::vector<T>& cx,
             const std::vector<T>& cy, const std::vector<T>& r, T* out, int32_t* hits) {
  const int64_t m = int64_t(b.size());
  if (!(a.area > T(0))) {
    std::fill(out, out + m, T(0));
    return;
  }
  int64_t nh = 0;
  for (int64_t j = 0; j < m; ++j) {
    const T ex = cx[j] - a.cx, ey = cy[j] - a.cy, rr = a.r + r[j];
    out[j] = T(0);
    hits[nh] = int32_t(j);
    nh += (ex * ex + ey * ey < rr * rr);
  }
  for (int64_t k = 0; k < nh; ++k) out[hits[k]] = rotated_iou(a, b[hits[k]]);
}

// Kept boxes by the grid cells their (padded) axis-aligned bounding boxes cover. A box that
// would cover more than kMaxCells cells goes to a list every query scans instead, so memory is
// O(n) whatever the sizes; a query that would visit more cells than there are kept boxes scans
// the kept boxes directly.
template <typename T> class KeptCells {
 public:
  static constexpr int64_t kMaxCells = 16;
  static constexpr double eps = sizeof(T) == 4 ? 0x1p-24 : 0x1p-53;

  explicit KeptCells(const std::vector<RBox<T>>& boxes) : boxes_(boxes), n_(int64_t(boxes.size())) {
    x0_.resize(n_), x1_.resize(n_), y0_.resize(n_), y1_.resize(n_);
    double minx = INFINITY, miny = INFINITY, maxx = -INFINITY, maxy = -INFINITY, sw = 0, sh = 0;
    int64_t m = 0;
    for (int64_t k = 0; k < n_; ++k) {
      const T ex = boxes[k].ex, ey = boxes[k].ey;
      // A few ulps of T around it too: rotated_iou_above's own test rounds in T, and a pair it
      // finds overlapping must not be pruned here (the GPU has no grid).
      const double cx = boxes[k].cx, cy = boxes[k].cy;
      const double slack = 8 * eps * (std::abs(cx) + std::abs(cy) + double(ex) + double(ey));
      x0_[k] = cx - ex - slack, x1_[k] = cx + ex + slack;
      y0_[k] = cy - ey - slack, y1_[k] = cy + ey + slack;
      if (!(boxes[k].area > T(0))) continue;
      minx = std::min(minx, x0_[k]), maxx = std::max(maxx, x1_[k]);
      miny = std::min(miny, y0_[k]), maxy = std::max(maxy, y1_[k]);
      sw += x1_[k] - x0_[k], sh += y1_[k] - y0_[k];
      ++m;
    }
    stamp_.assign(n_, -1);
    if (m == 0) return;
    // Cells about the mean box size: a box covers ~4 cells, a query visits ~4.
    const double cw = std::max(sw / m, 1e-300), ch = std::max(sh / m, 1e-300);
    nx_ = int64_t(std::clamp(std::floor((maxx - minx) / cw) + 1, 1.0, 4096.0));
    ny_ = int64_t(std::clamp(std::floor((maxy - miny) / ch) + 1, 1.0, 4096.0));
    while (double(nx_) * double(ny_) > 4.0 * double(m) + 64) {  // memory stays O(n)
      nx_ = std::max<int64_t>(1, nx_ / 2);
      ny_ = std::max<int64_t>(1, ny_ / 2);
    }
    ox_ = minx, oy_ = miny;
    sx_ = nx_ / std::max(maxx - minx, 1e-300);
    sy_ = ny_ / std::max(maxy - miny, 1e-300);
    head_.assign(nx_ * ny_, -1);
  }

  // True when a kept box has IoU(kept, box k) > t.
  bool suppressed(int64_t k, double t) {
    if (kept_.empty() || !(boxes_[k].area > T(0))) return false;  // IoU 0 is never > t >= 0
    int64_t i0, i1, j0, j1;
    cells(k, &i0, &i1, &j0, &j1);
    if ((i1 - i0 + 1) * (j1 - j0 + 1) > int64_t(kept_.size())) {
      for (int64_t q : kept_)
        if (test(q, k, t)) return true;
      return false;
    }
    for (int64_t q : big_)
      if (test(q, k, t)) return true;
    for (int64_t j = j0; j <= j1; ++j)
      for (int64_t i = i0; i <= i1; ++i)
        for (int32_t e = head_[j * nx_ + i]; e >= 0; e = next_[e])
          if (test(box_[e], k, t)) return true;
    return false;
  }

  void insert(int64_t k) {
    if (!(boxes_[k].area > T(0))) return;  // a zero-area box suppresses nothing
    kept_.push_back(k);
    int64_t i0, i1, j0, j1;
    cells(k, &i0, &i1, &j0, &j1);
    if ((i1 - i0 + 1) * (j1 - j0 + 1) > kMaxCells) {
      big_.push_back(k);
      return;
    }
    for (int64_t j = j0; j <= j1; ++j)
      for (int64_t i = i0; i <= i1; ++i) {
        const int64_t c = j * nx_ + i;
        box_.push_back(int32_t(k));
        next_.push_back(head_[c]);
        head_[c] = int32_t(box_.size() - 1);
      }
  }

 private:
  // Kept box q against candidate k, each pair once per query (a box sits in several cells).
  bool test(int64_t q, int64_t k, double t) {
    if (stamp_[q] == k) return false;
    stamp_[q] = k;
    if (!(x0_[q] < x1_[k] && x0_[k] < x1_[q] && y0_[q] < y1_[k] && y0_[k] < y1_[q])) return false;
    return rotated_iou_above(boxes_[q], boxes_[k], t);
  }
  void cells(int64_t k, int64_t* i0, int64_t* i1, int64_t* j0, int64_t* j1) const {
    *i0 = cell(x0_[k], ox_, sx_, nx_), *i1 = cell(x1_[k], ox_, sx_, nx_);
    *j0 = cell(y0_[k], oy_, sy_, ny_), *j1 = cell(y1_[k], oy_, sy_, ny_);
  }
  static int64_t cell(double v, double o, double s, int64_t n) {
    const double c = std::floor((v - o) * s);
    return c < 0 ? 0 : (c >= double(n) ? n - 1 : int64_t(c));
  }

  const std::vector<RBox<T>>& boxes_;
  int64_t n_;
  std::vector<double> x0_, x1_, y0_, y1_;  // padded bounding boxes
  double ox_ = 0, oy_ = 0, sx_ = 1, sy_ = 1;
  int64_t nx_ = 1, ny_ = 1;
  std::vector<int32_t> head_, next_, box_;  // per cell, a list of kept boxes
  std::vector<int64_t> kept_, big_, stamp_;
};

// Greedy NMS over boxes + 5 * order[0..n); writes the kept indices, returns their count.
template <typename T>
int64_t greedy(const T* boxes, const int64_t* order, int64_t n, double t, int64_t* keep) {
  if (n == 0) return 0;
  if (t < 0) {  // every IoU (>= 0) is above t: the first box suppresses all others
    keep[0] = order[0];
    return 1;
  }
  std::vector<RBox<T>> rb(n);
  for (int64_t k = 0; k < n; ++k) rb[k] = make_rbox(boxes + 5 * order[k]);
  KeptCells<T> kept(rb);
  int64_t count = 0;
  for (int64_t k = 0; k < n; ++k) {
    if (kept.suppressed(k, t)) continue;
    keep[count++] = order[k];
    kept.insert(k);
  }
  return count;
}

}  // namespace

template <typename T> void box_iou_rotated(const T* a, int64_t n, const T* b, int64_t m, T* out) {
  if (n == 0 || m == 0) return;
  hint_huge_pages(out, size_t(n) * size_t(m) * sizeof(T));
  const std::vector<RBox<T>> ra = prepare(a, n), rb = prepare(b, m);
  std::vector<T> cx(m), cy(m), r(m);
  for (int64_t j = 0; j < m; ++j) cx[j] = rb[j].cx, cy[j] = rb[j].cy, r[j] = rb[j].r;
#pragma omp parallel num_threads(threads_for(n* m, 1 << 14))
  {
    std::vector<int32_t> hits(m);
#pragma omp for schedule(dynamic, 16)
    for (int64_t i = 0; i < n; ++i) iou_row(ra[i], rb, cx, cy, r, out + i * m, hits.data());
  }
}

template <typename T>
int64_t nms_rotated(const T* boxes, const T* scores, const int64_t* idxs, int64_t n,
                    double iou_threshold, int64_t* keep) {
  return greedy_nms(greedy<T>, boxes, scores, idxs, n, iou_threshold, keep, 512);
}

#define FASTDET_INSTANTIATE(T)                                                \
  template void box_iou_rotated<T>(const T*, int64_t, const T*, int64_t, T*); \
  template int64_t nms_rotated<T>(const T*, const T*, const int64_t*, int64_t, double, int64_t*);
FASTDET_INSTANTIATE(float)
FASTDET_INSTANTIATE(double)

}  // namespace fastdet::cpu
