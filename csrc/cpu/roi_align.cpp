// roi_align forward and backward with torchvision.ops.roi_align semantics.
//
// Bilinear sampling is separable: the weight a bin gives pixel (r, c) is (sum of the row weights of
// its samples at r) * (sum of the column weights at c), invalid samples contributing 0 on either
// axis. A plan holds, for every RoI and bin, those merged row and column taps (1/count folded into
// the rows), so a bin costs (distinct rows) x (distinct columns) taps instead of 4 per sample.
//
// Channels go in blocks of kLanes. A task packs one (image, channel block) plane as [H*W][kLanes]
// in per-thread scratch that stays in L2, then walks that image's RoIs: every tap is one contiguous
// kLanes-wide multiply-add. Backward is the same walk scattering into the packed plane; a task owns
// its plane (or a band of its rows), so no two threads write one element and each element sums its
// terms in (RoI, bin) order: the result is bit-identical for any thread count.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <vector>

#include "parallel.h"

namespace fastdet::cpu {
namespace {

// 128 bytes of channels: enough independent accumulators to hide add latency, few enough for
// registers.
template <typename T> constexpr int64_t kLanes = 128 / sizeof(T);

inline int thread_id() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Scratch allocated before a parallel region (an exception inside one would terminate), aligned so
// every thread's slices start on a cache line.
template <typename T> struct Scratch {
  T* p = nullptr;
  explicit Scratch(int64_t n) {
    size_t bytes = (static_cast<size_t>(n) * sizeof(T) + 63) / 64 * 64;
    p = static_cast<T*>(std::aligned_alloc(64, bytes ? bytes : 64));
    if (!p) throw std::bad_alloc();
  }
  ~Scratch() { std::free(p); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
};

struct Shape {
  int64_t N, C, H, W, PH, PW, sampling_ratio;
  double spatial_scale;
  bool aligned;
};

template <typename T> struct Tap {
  int64_t idx;  // row or column
  T w;
};

// One axis of a RoI: bin p starts at start + p * bin and holds `grid` samples (0: none).
template <typename T> struct Axis {
  T start = 0, bin = 0;
  double grid = 0;
};

template <typename T> struct RoiGeom {
  int64_t n = -1;  // image, -1 when the batch index is outside [0, N)
  Axis<T> y, x;
  T inv_count = 0;
};

// Arithmetic in T and in torchvision's order, so sample positions match it exactly.
template <typename T> Axis<T> make_axis(T lo, T hi, int64_t P, const Shape& s) {
  Axis<T> a;
  T len = hi - lo;
  if (!s.aligned && len < T(1)) len = T(1);  // torchvision forces malformed RoIs to 1 pixel
  a.start = lo;
  a.bin = len / static_cast<T>(P);
  double g = s.sampling_ratio > 0 ? static_cast<double>(s.sampling_ratio)
                                  : std::ceil(static_cast<double>(a.bin));
  bool ok = g >= 1 && std::isfinite(g) && std::isfinite(a.start) && std::isfinite(a.bin);
  a.grid = ok ? g : 0;  // NaN, empty or inverted bins take no samples
  return a;
}

template <typename T> RoiGeom<T> roi_geometry(const T* r, const Shape& s) {
  RoiGeom<T> g;
  // (int64) truncation maps (-1, N) onto [0, N) like torchvision's cast; NaN fails the test.
  if (!(r[0] > T(-1) && r[0] < static_cast<T>(s.N))) return g;
  g.n = static_cast<int64_t>(r[0]);
  const T scale = static_cast<T>(s.spatial_scale), off = s.aligned ? T(0.5) : T(0);
  g.x = make_axis(r[1] * scale - off, r[3] * scale - off, s.PW, s);
  g.y = make_axis(r[2] * scale - off, r[4] * scale - off, s.PH, s);
  g.inv_count = T(1) / static_cast<T>(std::max(g.y.grid * g.x.grid, 1.0));
  return g;
}

// Samples of a bin that may land in [-1, extent]; every sample is still tested exactly, so the
// range (widened by a rounding margin) only spares work on RoIs far larger than the map.
template <typename T>
void sample_range(const Axis<T>& a, T lo, int64_t extent, int64_t& i0, int64_t& i1) {
  const double g = a.grid, cap = 4.0 * static_cast<double>(extent) + 16;
  i0 = 0;
  i1 = static_cast<int64_t>(std::min(g, 4e18)) - 1;
  if (g <= cap || a.bin == T(0)) return;
  const double b = a.bin, l = lo;
  const double m = 2 + 256 * std::numeric_limits<T>::epsilon() * (std::fabs(l) + std::fabs(b));
  double u = (-1 - m - l) / b * g - 0.5, v = (extent + m - l) / b * g - 0.5;
  double first = std::max(std::floor(std::min(u, v)) - 1, 0.0);
  double last = std::min(std::ceil(std::max(u, v)) + 1, g - 1);
  i0 = static_cast<int64_t>(std::min(first, 4e18));
  i1 = last < first ? i0 - 1 : static_cast<int64_t>(std::min(last, 4e18));
}

// Taps of bin p along one axis: the bilinear weights of its valid samples summed per pixel,
// times `scale`, in increasing pixel order, zeros dropped. acc: `extent` zeros of scratch, zero
// again on return. Writes to out unless it is null; returns the number of taps.
template <typename T>
int64_t bin_taps(const Axis<T>& a, int64_t p, int64_t extent, T scale, T* acc, Tap<T>* out) {
  if (a.grid == 0) return 0;
  const T lo = a.start + static_cast<T>(p) * a.bin, grid = static_cast<T>(a.grid);
  int64_t i0, i1, first = extent, last = -1;
  sample_range(a, lo, extent, i0, i1);
  for (int64_t i = i0; i <= i1; ++i) {
    T y = lo + (static_cast<T>(i) + T(0.5)) * a.bin / grid;
    if (!(y >= T(-1) && y <= static_cast<T>(extent))) continue;  // NaN-safe
    if (y < T(0)) y = T(0);
    int64_t low = static_cast<int64_t>(y), high = low + 1;
    if (low >= extent - 1) {
      low = high = extent - 1;
      y = static_cast<T>(low);
    }
    const T l = y - static_cast<T>(low);
    acc[low] += T(1) - l;
    acc[high] += l;
    first = std::min(first, low);
    last = std::max(last, high);
  }
  int64_t n = 0;
  for (int64_t j = first; j <= last; ++j) {
    if (acc[j] != T(0)) {
      if (out) out[n] = {j, acc[j] * scale};
      ++n;
    }
    acc[j] = T(0);
  }
  return n;
}

// Taps of every (RoI, bin) in CSR form, and the RoIs of each image in increasing index.
template <typename T> struct Plan {
  std::vector<int64_t> ybeg, xbeg;  // bin p of RoI k: [beg[k*P + p], beg[k*P + p + 1])
  std::vector<Tap<T>> ytap, xtap;
  std::vector<int64_t> order, img_beg;  // RoIs of image n: order[img_beg[n] .. img_beg[n+1])
  std::vector<int64_t> skipped;         // RoIs whose batch index is outside [0, N)
};

// Fills one RoI's taps (out null: counts them into beg[k*P + p + 1]).
template <typename T>
void roi_taps(const RoiGeom<T>& g, int64_t k, const Shape& s, T* acc, Plan<T>& pl, bool fill) {
  for (int64_t p = 0; p < s.PH; ++p) {
    int64_t* b = &pl.ybeg[k * s.PH + p];
    Tap<T>* out = fill ? pl.ytap.data() + b[0] : nullptr;
    int64_t n = g.n < 0 ? 0 : bin_taps(g.y, p, s.H, g.inv_count, acc, out);
    if (!fill) b[1] = n;
  }
  for (int64_t p = 0; p < s.PW; ++p) {
    int64_t* b = &pl.xbeg[k * s.PW + p];
    Tap<T>* out = fill ? pl.xtap.data() + b[0] : nullptr;
    int64_t n = g.n < 0 ? 0 : bin_taps(g.x, p, s.W, T(1), acc, out);
    if (!fill) b[1] = n;
  }
}

template <typename T> void group_by_image(const std::vector<RoiGeom<T>>& geo, int64_t N, Plan<T>& pl) {
  pl.img_beg.assign(N + 1, 0);
  for (const auto& g : geo)
    if (g.n >= 0) ++pl.img_beg[g.n + 1];
  for (int64_t n = 0; n < N; ++n) pl.img_beg[n + 1] += pl.img_beg[n];
  pl.order.resize(pl.img_beg[N]);
  std::vector<int64_t> next(pl.img_beg.begin(), pl.img_beg.end() - 1);
  for (int64_t k = 0; k < static_cast<int64_t>(geo.size()); ++k)
    if (geo[k].n >= 0)
      pl.order[next[geo[k].n]++] = k;
    else
      pl.skipped.push_back(k);
}

// Two passes (count, then fill) so the taps of all RoIs live in two flat arrays.
template <typename T> Plan<T> make_plan(const T* rois, int64_t K, const Shape& s) {
  Plan<T> pl;
  std::vector<RoiGeom<T>> geo(K);
  pl.ybeg.assign(K * s.PH + 1, 0);
  pl.xbeg.assign(K * s.PW + 1, 0);
  const int nt = threads_for(K * (s.PH + s.PW), 1 << 10);
  const int64_t stride = s.H + s.W;
  Scratch<T> acc(stride * nt);
  std::fill(acc.p, acc.p + stride * nt, T(0));
  for (int pass = 0; pass < 2; ++pass) {
#pragma omp parallel for schedule(dynamic, 16) num_threads(nt)
    for (int64_t k = 0; k < K; ++k) {
      if (pass == 0) geo[k] = roi_geometry(rois + 5 * k, s);
      roi_taps(geo[k], k, s, acc.p + stride * thread_id(), pl, pass == 1);
    }
    if (pass == 0) {
      for (size_t i = 1; i < pl.ybeg.size(); ++i) pl.ybeg[i] += pl.ybeg[i - 1];
      for (size_t i = 1; i < pl.xbeg.size(); ++i) pl.xbeg[i] += pl.xbeg[i - 1];
      pl.ytap.resize(pl.ybeg.back());
      pl.xtap.resize(pl.xbeg.back());
    }
  }
  group_by_image(geo, s.N, pl);
  return pl;
}

// ---- channel-blocked planes ----------------------------------------------------------------

// plane[i][l] = src[l][i] for l < nc (zero lanes above nc), i in [0, n).
template <typename T> void pack(const T* src, int64_t stride, int64_t nc, int64_t n, T* plane) {
  constexpr int64_t L = kLanes<T>, S = 16;
  if (nc < L)
    for (int64_t i = 0; i < n; ++i) std::fill(plane + i * L + nc, plane + (i + 1) * L, T(0));
  for (int64_t i0 = 0; i0 < n; i0 += S) {
    const int64_t i1 = std::min(i0 + S, n);
    for (int64_t l = 0; l < nc; ++l)
      for (int64_t i = i0; i < i1; ++i) plane[i * L + l] = src[l * stride + i];
  }
}

// dst[l][i] = plane[i][l] for l < nc, i in [0, n).
template <typename T> void unpack(const T* plane, int64_t nc, int64_t n, T* dst, int64_t stride) {
  constexpr int64_t L = kLanes<T>, S = 16;
  for (int64_t i0 = 0; i0 < n; i0 += S) {
    const int64_t i1 = std::min(i0 + S, n);
    for (int64_t l = 0; l < nc; ++l)
      for (int64_t i = i0; i < i1; ++i) dst[l * stride + i] = plane[i * L + l];
  }
}

template <typename T> struct BinTaps {
  const Tap<T>*ys, *xs;
  int64_t ny, nx;
};

template <typename T> BinTaps<T> bin_of(const Plan<T>& pl, const Shape& s, int64_t k, int64_t ph, int64_t pw) {
  const int64_t yb = pl.ybeg[k * s.PH + ph], xb = pl.xbeg[k * s.PW + pw];
  return {pl.ytap.data() + yb, pl.xtap.data() + xb, pl.ybeg[k * s.PH + ph + 1] - yb,
          pl.xbeg[k * s.PW + pw + 1] - xb};
}

// acc[l] = sum over the bin's taps of w * plane[pixel][l]; the accumulators stay in registers.
template <typename T>
inline __attribute__((always_inline)) void bin_sum(const T* plane, int64_t W, const BinTaps<T>& b, T* acc) {
  constexpr int64_t L = kLanes<T>;
  T a[L] = {};
  for (int64_t i = 0; i < b.ny; ++i) {
    const T* row = plane + b.ys[i].idx * W * L;
    const T wy = b.ys[i].w;
    for (int64_t j = 0; j < b.nx; ++j) {
      const T* p = row + b.xs[j].idx * L;
      const T w = wy * b.xs[j].w;
#pragma omp simd
      for (int64_t l = 0; l < L; ++l) a[l] += w * p[l];
    }
  }
  for (int64_t l = 0; l < L; ++l) acc[l] = a[l];
}

// plane[pixel][l] += w * g[l] for the taps of one bin whose row is in [r0, r1).
template <typename T>
inline __attribute__((always_inline)) void bin_scatter(T* plane, int64_t W, int64_t r0, int64_t r1,
                                                       const BinTaps<T>& b, const T* g) {
  constexpr int64_t L = kLanes<T>;
  T gv[L];
  for (int64_t l = 0; l < L; ++l) gv[l] = g[l];
  for (int64_t i = 0; i < b.ny; ++i) {
    const int64_t r = b.ys[i].idx;
    if (r < r0 || r >= r1) continue;
    T* row = plane + (r - r0) * W * L;
    const T wy = b.ys[i].w;
    for (int64_t j = 0; j < b.nx; ++j) {
      T* p = row + b.xs[j].idx * L;
      const T w = wy * b.xs[j].w;
#pragma omp simd
      for (int64_t l = 0; l < L; ++l) p[l] += w * gv[l];
    }
  }
}

// One RoI, one channel block: bins into tile [bin][lane], then out[c][bin] for nc channels.
template <typename T>
FASTDET_CLONES void pool_roi(const Plan<T>& pl, const Shape& s, int64_t k, const T* plane,
                             int64_t nc, T* tile, T* out) {
  constexpr int64_t L = kLanes<T>;
  const int64_t PP = s.PH * s.PW;
  for (int64_t ph = 0; ph < s.PH; ++ph)
    for (int64_t pw = 0; pw < s.PW; ++pw)
      bin_sum(plane, s.W, bin_of(pl, s, k, ph, pw), tile + (ph * s.PW + pw) * L);
  for (int64_t l = 0; l < nc; ++l)
    for (int64_t b = 0; b < PP; ++b) out[l * PP + b] = tile[b * L + l];
}

// One RoI, one channel block, rows [r0, r1) of the plane: gather grad [c][bin] into the tile,
// then scatter it. Lanes at and above nc of the tile stay zero.
template <typename T>
FASTDET_CLONES void unpool_roi(const Plan<T>& pl, const Shape& s, int64_t k, const T* grad,
                               int64_t nc, T* tile, T* plane, int64_t r0, int64_t r1) {
  constexpr int64_t L = kLanes<T>;
  const int64_t PP = s.PH * s.PW;
  for (int64_t l = 0; l < nc; ++l)
    for (int64_t b = 0; b < PP; ++b) tile[b * L + l] = grad[l * PP + b];
  for (int64_t ph = 0; ph < s.PH; ++ph)
    for (int64_t pw = 0; pw < s.PW; ++pw)
      bin_scatter(plane, s.W, r0, r1, bin_of(pl, s, k, ph, pw), tile + (ph * s.PW + pw) * L);
}

// Tasks split (image, channel block) further into `parts` when there are fewer than threads.
struct Tasks {
  int64_t CB, parts, count;
  int nt;
};

inline Tasks make_tasks(const Shape& s, int64_t lanes, int64_t work, int64_t max_parts) {
  Tasks t;
  t.CB = ceil_div(s.C, lanes);
  t.nt = threads_for(work);
  t.parts = std::min(std::max<int64_t>(1, ceil_div(t.nt, s.N * t.CB)), std::max<int64_t>(max_parts, 1));
  t.count = s.N * t.CB * t.parts;
  t.nt = static_cast<int>(std::min<int64_t>(t.nt, t.count));
  return t;
}

template <typename T>
void forward_task(const T* input, const Plan<T>& pl, const Shape& s, const Tasks& t, int64_t task,
                  T* plane, T* tile, T* out) {
  constexpr int64_t L = kLanes<T>;
  const int64_t n = task / (t.CB * t.parts), cb = task / t.parts % t.CB, part = task % t.parts;
  const int64_t b0 = pl.img_beg[n], len = pl.img_beg[n + 1] - b0;
  const int64_t i0 = b0 + len * part / t.parts, i1 = b0 + len * (part + 1) / t.parts;
  if (i0 == i1) return;
  const int64_t c0 = cb * L, nc = std::min(L, s.C - c0), HW = s.H * s.W, PP = s.PH * s.PW;
  pack(input + (n * s.C + c0) * HW, HW, nc, HW, plane);
  for (int64_t i = i0; i < i1; ++i) {
    const int64_t k = pl.order[i];
    pool_roi(pl, s, k, plane, nc, tile, out + (k * s.C + c0) * PP);
  }
}

// Task: rows [r0, r1) of one (image, channel block) plane, all of that image's RoIs in order.
template <typename T>
void backward_task(const T* grad, const Plan<T>& pl, const Shape& s, const Tasks& t, int64_t task,
                   T* plane, T* tile, T* grad_input) {
  constexpr int64_t L = kLanes<T>;
  const int64_t n = task / (t.CB * t.parts), cb = task / t.parts % t.CB, part = task % t.parts;
  const int64_t r0 = s.H * part / t.parts, r1 = s.H * (part + 1) / t.parts;
  const int64_t c0 = cb * L, nc = std::min(L, s.C - c0), HW = s.H * s.W, PP = s.PH * s.PW;
  std::fill(plane, plane + (r1 - r0) * s.W * L, T(0));
  std::fill(tile, tile + PP * L, T(0));
  for (int64_t i = pl.img_beg[n]; i < pl.img_beg[n + 1]; ++i) {
    const int64_t k = pl.order[i];
    unpool_roi(pl, s, k, grad + (k * s.C + c0) * PP, nc, tile, plane, r0, r1);
  }
  unpack(plane, nc, (r1 - r0) * s.W, grad_input + (n * s.C + c0) * HW + r0 * s.W, HW);
}

}  // namespace

template <typename T>
void roi_align_forward(const T* input, int64_t N, int64_t C, int64_t H, int64_t W, const T* rois,
                       int64_t K, int64_t PH, int64_t PW, double spatial_scale,
                       int64_t sampling_ratio, bool aligned, T* out) {
  constexpr int64_t L = kLanes<T>;
  const int64_t PP = PH * PW;
  if (K <= 0 || C <= 0 || PP <= 0) return;
  if (N <= 0 || H <= 0 || W <= 0) {
    std::fill(out, out + K * C * PP, T(0));
    return;
  }
  const Shape s{N, C, H, W, PH, PW, sampling_ratio, spatial_scale, aligned};
  const Plan<T> pl = make_plan(rois, K, s);
  for (int64_t k : pl.skipped) std::fill(out + k * C * PP, out + (k + 1) * C * PP, T(0));
  const Tasks t = make_tasks(s, L, K * PP * C * 4 + N * C * H * W, K);
  const int64_t per_thread = H * W * L + PP * L;
  Scratch<T> buf(per_thread * t.nt);
#pragma omp parallel for schedule(dynamic, 1) num_threads(t.nt)
  for (int64_t task = 0; task < t.count; ++task) {
    T* plane = buf.p + per_thread * thread_id();
    forward_task(input, pl, s, t, task, plane, plane + H * W * L, out);
  }
}

template <typename T>
void roi_align_backward(const T* grad_out, int64_t N, int64_t C, int64_t H, int64_t W,
                        const T* rois, int64_t K, int64_t PH, int64_t PW, double spatial_scale,
                        int64_t sampling_ratio, bool aligned, T* grad_input) {
  constexpr int64_t L = kLanes<T>;
  const int64_t PP = PH * PW;
  if (N <= 0 || C <= 0 || H <= 0 || W <= 0) return;
  if (K <= 0 || PP <= 0) {
    std::fill(grad_input, grad_input + N * C * H * W, T(0));
    return;
  }
  const Shape s{N, C, H, W, PH, PW, sampling_ratio, spatial_scale, aligned};
  const Plan<T> pl = make_plan(rois, K, s);
  const Tasks t = make_tasks(s, L, K * PP * C * 4 + N * C * H * W, H);
  const int64_t rows = ceil_div(H, t.parts), per_thread = rows * W * L + PP * L;
  Scratch<T> buf(per_thread * t.nt);
#pragma omp parallel for schedule(dynamic, 1) num_threads(t.nt)
  for (int64_t task = 0; task < t.count; ++task) {
    T* plane = buf.p + per_thread * thread_id();
    backward_task(grad_out, pl, s, t, task, plane, plane + rows * W * L, grad_input);
  }
}

#define FASTDET_INSTANTIATE(T)                                                                  \
  template void roi_align_forward<T>(const T*, int64_t, int64_t, int64_t, int64_t, const T*,    \
                                     int64_t, int64_t, int64_t, double, int64_t, bool, T*);     \
  template void roi_align_backward<T>(const T*, int64_t, int64_t, int64_t, int64_t, const T*,   \
                                      int64_t, int64_t, int64_t, double, int64_t, bool, T*);
FASTDET_INSTANTIATE(float)
FASTDET_INSTANTIATE(double)

}  // namespace fastdet::cpu
