// roi_align forward and backward with torchvision.ops.roi_align semantics.
//
// Bilinear sampling is separable: the weight a bin gives pixel (r, c) is (sum of the row weights of
// its samples at r) * (sum of the column weights at c), an invalid sample contributing 0 on either
// axis. A plan holds, for every RoI and bin, those merged row and column taps (1/count folded into
// the rows), so a bin costs (distinct rows) x (distinct columns) taps, not 4 per sample, and a RoI
// far larger than the map costs its extent, not its sample count squared.
//
// Channels go in blocks of kLanes. A task packs the window of an image that its RoIs touch, for a
// few channel blocks, as [pixel][kLanes] in per-thread scratch that stays in L2, then walks the
// image's RoIs: each tap is one contiguous kLanes-wide multiply-add. Backward is the same walk,
// scattering into zeroed planes. Where an image's RoIs are too sparse to repay packing its window,
// its tasks read and write NCHW directly, a channel at a time, with the same taps in the same order
// (so the same bits). A task owns its channels (and a band of rows): no two threads write one
// element, and every element sums its terms in (RoI, bin) order, so results are bit-identical for
// any thread count.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <new>
#include <vector>

#include "parallel.h"

#if defined(__GNUC__)
#define FASTDET_INLINE inline __attribute__((always_inline))
#else
#define FASTDET_INLINE inline
#endif

// GCC -O3 unrolls-and-jams the tap loop around the lane loop of bin_sum / bin_scatter, leaving the
// lanes scalar (2-3x slower); the kernels opt out of that one transformation.
#if defined(__GNUC__) && !defined(__clang__)
#define FASTDET_NO_JAM __attribute__((optimize("no-loop-unroll-and-jam")))
#else
#define FASTDET_NO_JAM
#endif

namespace fastdet::cpu {
namespace {

// 128 bytes of channels: enough independent accumulators to hide add latency, few enough to stay
// in registers (8 SSE or 4 AVX).
template <typename T> constexpr int64_t kLanes = 128 / sizeof(T);

// Allocated before a parallel region (an exception inside one would terminate); cache-line
// aligned, so with slices in multiples of kLanes a tap never straddles an extra line.
template <typename T> struct Scratch {
  T* p;
  explicit Scratch(int64_t n)
      : p(static_cast<T*>(::operator new(static_cast<size_t>(std::max<int64_t>(n, 1)) * sizeof(T),
                                         std::align_val_t(64)))) {}
  ~Scratch() { ::operator delete(p, std::align_val_t(64)); }
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
  int64_t n = -1;  // image; -1 when the batch index is outside [0, N)
  Axis<T> y, x;
  T inv_count = 0;
};

// Arithmetic in T and in torchvision's order, so that sample positions match it exactly.
template <typename T> Axis<T> make_axis(T lo, T hi, int64_t P, const Shape& s) {
  Axis<T> a;
  T len = hi - lo;
  if (!s.aligned && len < T(1)) len = T(1);  // torchvision forces malformed RoIs to 1 pixel
  a.start = lo;
  a.bin = len / static_cast<T>(P);
  const double g = s.sampling_ratio > 0 ? static_cast<double>(s.sampling_ratio)
                                        : std::ceil(static_cast<double>(a.bin));
  const bool ok = g >= 1 && std::isfinite(g) && std::isfinite(a.start) && std::isfinite(a.bin);
  a.grid = ok ? g : 0;  // NaN, empty or inverted bins take no samples
  return a;
}

template <typename T> RoiGeom<T> roi_geometry(const T* r, const Shape& s) {
  RoiGeom<T> g;
  // Truncation maps (-1, N) onto [0, N), as torchvision's int cast does; NaN fails the test.
  if (!(r[0] > T(-1) && r[0] < static_cast<T>(s.N))) return g;
  g.n = static_cast<int64_t>(r[0]);
  const T scale = static_cast<T>(s.spatial_scale), off = s.aligned ? T(0.5) : T(0);
  g.x = make_axis(r[1] * scale - off, r[3] * scale - off, s.PW, s);
  g.y = make_axis(r[2] * scale - off, r[4] * scale - off, s.PH, s);
  g.inv_count = T(1) / static_cast<T>(std::max(g.y.grid * g.x.grid, 1.0));
  return g;
}

// Samples [i0, i1] of a bin that may land in [-1, extent]. Each is still tested exactly, so the
// range (widened by a rounding margin) only spares work when bins dwarf the map.
template <typename T>
void sample_range(const Axis<T>& a, T lo, int64_t extent, int64_t& i0, int64_t& i1) {
  constexpr double kMax = 4e18;  // below INT64_MAX
  const double g = a.grid;
  i0 = 0;
  i1 = static_cast<int64_t>(std::min(g, kMax)) - 1;
  if (g <= 4.0 * static_cast<double>(extent) + 16 || a.bin == T(0)) return;
  const double b = a.bin, l = lo;
  const double m = 2 + 256 * std::numeric_limits<T>::epsilon() * (std::fabs(l) + std::fabs(b));
  const double u = (-1 - m - l) / b * g - 0.5, v = (extent + m - l) / b * g - 0.5;
  const double first = std::max(std::floor(std::min(u, v)) - 1, 0.0);
  const double last = std::min(std::ceil(std::max(u, v)) + 1, g - 1);
  i0 = static_cast<int64_t>(std::min(first, kMax));
  i1 = last < first ? i0 - 1 : static_cast<int64_t>(std::min(last, kMax));
}

// Taps of bin p along one axis: its valid samples' bilinear weights summed per pixel, times
// `scale`, in increasing pixel order, zeros dropped. acc: `extent` zeros of scratch, zero again on
// return. Writes to out unless it is null; returns the number of taps.
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

// Rows [r0, r1) x columns [c0, c1) of a map.
struct Window {
  int64_t r0 = 0, r1 = 0, c0 = 0, c1 = 0;
  int64_t rows() const { return r1 - r0; }
  int64_t cols() const { return c1 - c0; }
};

// Taps of every (RoI, bin) in CSR form; the RoIs of each image in increasing index; per image,
// the window its taps touch and whether packing that window pays.
template <typename T> struct Plan {
  std::vector<int64_t> ybeg, xbeg;  // bin p of RoI k: taps [beg[k*P + p], beg[k*P + p + 1])
  std::vector<Tap<T>> ytap, xtap;
  std::vector<int64_t> order, img_beg;  // RoIs of image n: order[img_beg[n] .. img_beg[n+1])
  std::vector<int64_t> skipped;         // RoIs whose batch index is outside [0, N)
  std::vector<Window> win;
  std::vector<char> packed;
};

// One RoI's taps; without `fill`, only their counts, into beg[k*P + p + 1].
template <typename T>
void roi_taps(const RoiGeom<T>& g, int64_t k, const Shape& s, T* acc, Plan<T>& pl, bool fill) {
  for (int64_t p = 0; p < s.PH; ++p) {
    int64_t* b = &pl.ybeg[k * s.PH + p];
    Tap<T>* out = fill ? pl.ytap.data() + b[0] : nullptr;
    const int64_t n = g.n < 0 ? 0 : bin_taps(g.y, p, s.H, g.inv_count, acc, out);
    if (!fill) b[1] = n;
  }
  for (int64_t p = 0; p < s.PW; ++p) {
    int64_t* b = &pl.xbeg[k * s.PW + p];
    Tap<T>* out = fill ? pl.xtap.data() + b[0] : nullptr;
    const int64_t n = g.n < 0 ? 0 : bin_taps(g.x, p, s.W, T(1), acc, out);
    if (!fill) b[1] = n;
  }
}

template <typename T>
void group_by_image(const std::vector<RoiGeom<T>>& geo, int64_t N, Plan<T>& pl) {
  pl.img_beg.assign(N + 1, 0);
  for (const auto& g : geo)
    if (g.n >= 0) ++pl.img_beg[g.n + 1];
  for (int64_t n = 0; n < N; ++n) pl.img_beg[n + 1] += pl.img_beg[n];
  pl.order.resize(pl.img_beg[N]);
  std::vector<int64_t> next(pl.img_beg.begin(), pl.img_beg.end() - 1);
  for (int64_t k = 0; k < static_cast<int64_t>(geo.size()); ++k) {
    if (geo[k].n >= 0)
      pl.order[next[geo[k].n]++] = k;
    else
      pl.skipped.push_back(k);
  }
}

// Packing costs a transposed element per window pixel and channel, and saves most of the cost of
// a scalar tap. Measured break-even (2 x 256 x 200 x 336, 16 to 256 small RoIs): a window of about
// 3x (forward) or 2x (backward) as many pixels as the image's taps.
constexpr double kPackForward = 3, kPackBackward = 2;

template <typename T> void choose_paths(const Shape& s, double pack, Plan<T>& pl) {
  pl.win.assign(s.N, Window{s.H, 0, s.W, 0});
  pl.packed.assign(s.N, 0);
  for (int64_t n = 0; n < s.N; ++n) {
    Window& w = pl.win[n];
    double taps = 0;
    for (int64_t i = pl.img_beg[n]; i < pl.img_beg[n + 1]; ++i) {
      const int64_t k = pl.order[i], *yb = &pl.ybeg[k * s.PH], *xb = &pl.xbeg[k * s.PW];
      if (yb[s.PH] == yb[0] || xb[s.PW] == xb[0]) continue;  // samples nothing
      taps += static_cast<double>(yb[s.PH] - yb[0]) * static_cast<double>(xb[s.PW] - xb[0]);
      for (int64_t p = 0; p < s.PH; ++p)
        if (yb[p + 1] > yb[p]) {  // taps are sorted: the first and last bound the bin
          w.r0 = std::min(w.r0, pl.ytap[yb[p]].idx);
          w.r1 = std::max(w.r1, pl.ytap[yb[p + 1] - 1].idx + 1);
        }
      for (int64_t p = 0; p < s.PW; ++p)
        if (xb[p + 1] > xb[p]) {
          w.c0 = std::min(w.c0, pl.xtap[xb[p]].idx);
          w.c1 = std::max(w.c1, pl.xtap[xb[p + 1] - 1].idx + 1);
        }
    }
    if (taps == 0) w = Window{};
    pl.packed[n] = static_cast<double>(w.rows()) * static_cast<double>(w.cols()) < pack * taps;
  }
}

// Two passes (count, then fill) so that the taps of all RoIs live in two flat arrays.
template <typename T> Plan<T> make_plan(const T* rois, int64_t K, const Shape& s, double pack) {
  Plan<T> pl;
  std::vector<RoiGeom<T>> geo(K);
  pl.ybeg.assign(K * s.PH + 1, 0);
  pl.xbeg.assign(K * s.PW + 1, 0);
  const int nt = threads_for(K * (s.PH + s.PW), 1 << 10);
  const int64_t stride = s.H + s.W;
  std::vector<T> acc(stride * nt, T(0));
  for (int pass = 0; pass < 2; ++pass) {
#pragma omp parallel for schedule(dynamic, 16) num_threads(nt)
    for (int64_t k = 0; k < K; ++k) {
      if (pass == 0) geo[k] = roi_geometry(rois + 5 * k, s);
      roi_taps(geo[k], k, s, acc.data() + stride * thread_id(), pl, pass == 1);
    }
    if (pass == 0) {
      for (size_t i = 1; i < pl.ybeg.size(); ++i) pl.ybeg[i] += pl.ybeg[i - 1];
      for (size_t i = 1; i < pl.xbeg.size(); ++i) pl.xbeg[i] += pl.xbeg[i - 1];
      pl.ytap.resize(pl.ybeg.back());
      pl.xtap.resize(pl.xbeg.back());
    }
  }
  group_by_image(geo, s.N, pl);
  choose_paths(s, pack, pl);
  return pl;
}

// ---- channel-blocked kernels ----------------------------------------------------------------

// dst[j * ds + i] = src[i * ss + j] for i < rows, j < cols, in 8 x 8 blocks.
template <typename T>
FASTDET_CLONES void transpose(const T* src, int64_t ss, int64_t rows, int64_t cols, T* dst,
                              int64_t ds) {
  constexpr int64_t S = 8;
  for (int64_t i0 = 0; i0 < rows; i0 += S) {
    const int64_t ni = std::min(S, rows - i0);
    for (int64_t j0 = 0; j0 < cols; j0 += S) {
      const int64_t nj = std::min(S, cols - j0);
      const T* s = src + i0 * ss + j0;
      T* d = dst + j0 * ds + i0;
      for (int64_t j = 0; j < nj; ++j)
        for (int64_t i = 0; i < ni; ++i) d[j * ds + i] = s[i * ss + j];
    }
  }
}

// plane[i][l] = src[l][i] for l < nc (lanes from nc on zero), i < n.
template <typename T> void pack(const T* src, int64_t stride, int64_t nc, int64_t n, T* plane) {
  constexpr int64_t L = kLanes<T>;
  if (nc < L)
    for (int64_t i = 0; i < n; ++i) std::fill(plane + i * L + nc, plane + (i + 1) * L, T(0));
  transpose(src, stride, nc, n, plane, L);
}

template <typename T> struct BinTaps {
  const Tap<T>*ys, *xs;
  int64_t ny, nx;
};

template <typename T>
FASTDET_INLINE BinTaps<T> bin_of(const Plan<T>& pl, const Shape& s, int64_t k, int64_t ph,
                                 int64_t pw) {
  const int64_t yb = pl.ybeg[k * s.PH + ph], xb = pl.xbeg[k * s.PW + pw];
  return {pl.ytap.data() + yb, pl.xtap.data() + xb, pl.ybeg[k * s.PH + ph + 1] - yb,
          pl.xbeg[k * s.PW + pw + 1] - xb};
}

// A packed window: pixel (r, c) of the map at p[(row(r) + c) * kLanes].
template <typename T> struct Packed {
  T* p;
  int64_t r0, c0, cols;
  int64_t row(int64_t r) const { return (r - r0) * cols - c0; }
};

// acc[l] = sum over the bin's taps of w * pixel[l], accumulated in registers.
template <typename T>
FASTDET_INLINE void bin_sum(const Packed<T>& pk, const BinTaps<T>& b, T* acc) {
  constexpr int64_t L = kLanes<T>;
  T a[L] = {};
  for (int64_t i = 0; i < b.ny; ++i) {
    const int64_t row = pk.row(b.ys[i].idx);
    const T wy = b.ys[i].w;
    for (int64_t j = 0; j < b.nx; ++j) {
      const T* p = pk.p + (row + b.xs[j].idx) * L;
      const T w = wy * b.xs[j].w;
#pragma omp simd
      for (int64_t l = 0; l < L; ++l) a[l] += w * p[l];
    }
  }
  for (int64_t l = 0; l < L; ++l) acc[l] = a[l];
}

// pixel[l] += w * g[l] over the bin's taps whose row is in [r0, r1).
template <typename T>
FASTDET_INLINE void bin_scatter(const Packed<T>& pk, int64_t r0, int64_t r1, const BinTaps<T>& b,
                                const T* g) {
  constexpr int64_t L = kLanes<T>;
  T gv[L];
  for (int64_t l = 0; l < L; ++l) gv[l] = g[l];
  for (int64_t i = 0; i < b.ny; ++i) {
    const int64_t r = b.ys[i].idx;
    if (r < r0 || r >= r1) continue;
    const int64_t row = pk.row(r);
    const T wy = b.ys[i].w;
    for (int64_t j = 0; j < b.nx; ++j) {
      T* p = pk.p + (row + b.xs[j].idx) * L;
      const T w = wy * b.xs[j].w;
#pragma omp simd
      for (int64_t l = 0; l < L; ++l) p[l] += w * gv[l];
    }
  }
}

// One RoI, one channel block: every bin into tile [bin][lane], then out[c][bin] for nc channels.
template <typename T>
FASTDET_CLONES FASTDET_NO_JAM void pool_roi(const Plan<T>& pl, const Shape& s, int64_t k,
                                            const Packed<T>& pk, int64_t nc, T* tile, T* out) {
  constexpr int64_t L = kLanes<T>;
  const int64_t PP = s.PH * s.PW;
  for (int64_t ph = 0; ph < s.PH; ++ph)
    for (int64_t pw = 0; pw < s.PW; ++pw)
      bin_sum(pk, bin_of(pl, s, k, ph, pw), tile + (ph * s.PW + pw) * L);
  transpose(tile, L, PP, nc, out, PP);
}

// One RoI, one channel block, rows [r0, r1): grad [c][bin] into tile [bin][lane] (lanes from nc
// on stay zero), then scattered.
template <typename T>
FASTDET_CLONES FASTDET_NO_JAM void unpool_roi(const Plan<T>& pl, const Shape& s, int64_t k,
                                              const T* grad, int64_t nc, T* tile,
                                              const Packed<T>& pk, int64_t r0, int64_t r1) {
  constexpr int64_t L = kLanes<T>;
  const int64_t PP = s.PH * s.PW;
  transpose(grad, PP, nc, PP, tile, L);
  for (int64_t ph = 0; ph < s.PH; ++ph)
    for (int64_t pw = 0; pw < s.PW; ++pw)
      bin_scatter(pk, r0, r1, bin_of(pl, s, k, ph, pw), tile + (ph * s.PW + pw) * L);
}

// pool_roi straight from one NCHW plane: same taps, same order of additions, same results.
template <typename T>
void pool_direct(const Plan<T>& pl, const Shape& s, int64_t k, const T* plane, T* out) {
  for (int64_t ph = 0; ph < s.PH; ++ph)
    for (int64_t pw = 0; pw < s.PW; ++pw) {
      const BinTaps<T> b = bin_of(pl, s, k, ph, pw);
      T a = 0;
      for (int64_t i = 0; i < b.ny; ++i) {
        const T* row = plane + b.ys[i].idx * s.W;
        for (int64_t j = 0; j < b.nx; ++j) a += b.ys[i].w * b.xs[j].w * row[b.xs[j].idx];
      }
      out[ph * s.PW + pw] = a;
    }
}

// unpool_roi straight into one NCHW plane, rows [r0, r1) only.
template <typename T>
void unpool_direct(const Plan<T>& pl, const Shape& s, int64_t k, const T* grad, int64_t r0,
                   int64_t r1, T* plane) {
  for (int64_t ph = 0; ph < s.PH; ++ph)
    for (int64_t pw = 0; pw < s.PW; ++pw) {
      const BinTaps<T> b = bin_of(pl, s, k, ph, pw);
      const T g = grad[ph * s.PW + pw];
      for (int64_t i = 0; i < b.ny; ++i) {
        const int64_t r = b.ys[i].idx;
        if (r < r0 || r >= r1) continue;
        T* row = plane + r * s.W;
        for (int64_t j = 0; j < b.nx; ++j) row[b.xs[j].idx] += b.ys[i].w * b.xs[j].w * g;
      }
    }
}

// ---- work split -----------------------------------------------------------------------------

// A task is (image, group of G channel blocks, part). Groups aim at 4 tasks a thread (room to
// balance on a shared machine) and at most kGroupBytes of planes; a RoI then reads or writes G
// blocks of out / grad_out in one run. Parts split the image's RoIs (forward) or rows (backward)
// when threads outnumber (image, group) pairs.
constexpr int64_t kGroupBytes = int64_t(2) << 20;

struct Tasks {
  int64_t CB, G, NG, parts, count;  // channel blocks, blocks a group, groups an image
  int nt;
  int64_t image(int64_t task) const { return task / (NG * parts); }
  int64_t block0(int64_t task) const { return task / parts % NG * G; }
  int64_t part(int64_t task) const { return task % parts; }
};

// The largest window of a packed image (pixels), 0 when none is packed.
template <typename T> int64_t max_window(const Plan<T>& pl) {
  int64_t m = 0;
  for (size_t n = 0; n < pl.win.size(); ++n)
    if (pl.packed[n]) m = std::max(m, pl.win[n].rows() * pl.win[n].cols());
  return m;
}

template <typename T>
Tasks make_tasks(const Shape& s, int64_t K, int64_t window, int64_t max_parts) {
  constexpr int64_t L = kLanes<T>;
  Tasks t;
  t.nt = threads_for(s.N * s.C * s.H * s.W + K * s.C * s.PH * s.PW * 4);
  t.CB = ceil_div(s.C, L);
  const int64_t plane = std::max<int64_t>(window, 1) * L * int64_t(sizeof(T));
  const int64_t gmax = std::max<int64_t>(1, kGroupBytes / plane);
  t.G = std::min(ceil_div(t.CB, ceil_div(4 * int64_t(t.nt), s.N)), gmax);
  t.NG = ceil_div(t.CB, t.G);
  t.parts = std::clamp<int64_t>(ceil_div(t.nt, s.N * t.NG), 1, std::max<int64_t>(max_parts, 1));
  t.count = s.N * t.NG * t.parts;
  t.nt = static_cast<int>(std::min<int64_t>(t.nt, t.count));
  return t;
}

// Channels [c0, c1) of the task, and its share [i0, i1) of the image's RoIs.
struct Share {
  int64_t n, c0, c1, i0, i1;
};

template <typename T>
Share share_of(const Plan<T>& pl, const Shape& s, const Tasks& t, int64_t task) {
  constexpr int64_t L = kLanes<T>;
  const int64_t n = t.image(task), part = t.part(task), b0 = pl.img_beg[n];
  const int64_t len = pl.img_beg[n + 1] - b0, c0 = t.block0(task) * L;
  return {n, c0, std::min(c0 + t.G * L, s.C), b0 + len * part / t.parts,
          b0 + len * (part + 1) / t.parts};
}

// Packs the image's window for the task's blocks, then pools its share of the RoIs.
template <typename T>
void forward_packed(const T* input, const Plan<T>& pl, const Shape& s, const Share& sh, T* planes,
                    T* tile, T* out) {
  constexpr int64_t L = kLanes<T>;
  const Window& w = pl.win[sh.n];
  const int64_t HW = s.H * s.W, PP = s.PH * s.PW, area = w.rows() * w.cols();
  for (int64_t c = sh.c0; c < sh.c1; c += L) {
    const int64_t nc = std::min(L, sh.c1 - c);
    const T* src = input + (sh.n * s.C + c) * HW + w.r0 * s.W + w.c0;
    T* dst = planes + (c - sh.c0) / L * area * L;
    for (int64_t r = 0; r < w.rows(); ++r)
      pack(src + r * s.W, HW, nc, w.cols(), dst + r * w.cols() * L);
  }
  for (int64_t i = sh.i0; i < sh.i1; ++i) {
    const int64_t k = pl.order[i];
    for (int64_t c = sh.c0; c < sh.c1; c += L) {
      const Packed<T> pk{planes + (c - sh.c0) / L * area * L, w.r0, w.c0, w.cols()};
      pool_roi(pl, s, k, pk, std::min(L, sh.c1 - c), tile, out + (k * s.C + c) * PP);
    }
  }
}

template <typename T>
void forward_direct(const T* input, const Plan<T>& pl, const Shape& s, const Share& sh, T* out) {
  const int64_t HW = s.H * s.W, PP = s.PH * s.PW;
  for (int64_t c = sh.c0; c < sh.c1; ++c)
    for (int64_t i = sh.i0; i < sh.i1; ++i) {
      const int64_t k = pl.order[i];
      pool_direct(pl, s, k, input + (sh.n * s.C + c) * HW, out + (k * s.C + c) * PP);
    }
}

// Zeros rows [h0, h1) of the task's channels of grad_input, but for columns [c0, c1) of the rows
// in [r0, r1).
template <typename T>
void zero_outside(const Shape& s, const Share& sh, int64_t h0, int64_t h1, int64_t r0, int64_t r1,
                  int64_t c0, int64_t c1, T* grad_input) {
  for (int64_t c = sh.c0; c < sh.c1; ++c) {
    T* plane = grad_input + (sh.n * s.C + c) * s.H * s.W;
    for (int64_t r = h0; r < h1; ++r) {
      T* row = plane + r * s.W;
      const bool in = r >= r0 && r < r1;
      std::fill(row, row + (in ? c0 : s.W), T(0));
      if (in) std::fill(row + c1, row + s.W, T(0));
    }
  }
}

// Window rows [r0, r1) of the task's blocks: every RoI of the image in order, then unpacked; the
// part's share of rows outside them is zeroed.
template <typename T>
void backward_packed(const T* grad, const Plan<T>& pl, const Shape& s, const Tasks& t, int64_t task,
                     T* planes, T* tile, T* grad_input) {
  constexpr int64_t L = kLanes<T>;
  const Share sh = share_of(pl, s, t, task);
  const Window& w = pl.win[sh.n];
  const int64_t part = t.part(task), HW = s.H * s.W, PP = s.PH * s.PW;
  const int64_t r0 = w.r0 + w.rows() * part / t.parts;
  const int64_t r1 = w.r0 + w.rows() * (part + 1) / t.parts, band = (r1 - r0) * w.cols();
  std::fill(planes, planes + ceil_div(sh.c1 - sh.c0, L) * band * L, T(0));
  std::fill(tile, tile + PP * L, T(0));
  for (int64_t i = pl.img_beg[sh.n]; i < pl.img_beg[sh.n + 1]; ++i) {
    const int64_t k = pl.order[i];
    for (int64_t c = sh.c0; c < sh.c1; c += L) {
      const Packed<T> pk{planes + (c - sh.c0) / L * band * L, r0, w.c0, w.cols()};
      unpool_roi(pl, s, k, grad + (k * s.C + c) * PP, std::min(L, sh.c1 - c), tile, pk, r0, r1);
    }
  }
  // This part's share of the rows outside the window, then the sides of its band.
  const int64_t h0 = s.H * part / t.parts, h1 = s.H * (part + 1) / t.parts;
  zero_outside(s, sh, h0, std::min(h1, w.r0), 0, 0, 0, 0, grad_input);
  zero_outside(s, sh, std::max(h0, w.r1), h1, 0, 0, 0, 0, grad_input);
  zero_outside(s, sh, r0, r1, r0, r1, w.c0, w.c1, grad_input);
  for (int64_t c = sh.c0; c < sh.c1; c += L) {
    const T* src = planes + (c - sh.c0) / L * band * L;
    T* dst = grad_input + (sh.n * s.C + c) * HW + w.c0;
    for (int64_t r = r0; r < r1; ++r)
      transpose(src + (r - r0) * w.cols() * L, L, w.cols(), std::min(L, sh.c1 - c), dst + r * s.W,
                HW);
  }
}

template <typename T>
void backward_direct(const T* grad, const Plan<T>& pl, const Shape& s, const Tasks& t, int64_t task,
                     T* grad_input) {
  const Share sh = share_of(pl, s, t, task);
  const int64_t part = t.part(task), HW = s.H * s.W, PP = s.PH * s.PW;
  const int64_t r0 = s.H * part / t.parts, r1 = s.H * (part + 1) / t.parts;
  for (int64_t c = sh.c0; c < sh.c1; ++c) {
    T* plane = grad_input + (sh.n * s.C + c) * HW;
    std::fill(plane + r0 * s.W, plane + r1 * s.W, T(0));
    for (int64_t i = pl.img_beg[sh.n]; i < pl.img_beg[sh.n + 1]; ++i) {
      const int64_t k = pl.order[i];
      unpool_direct(pl, s, k, grad + (k * s.C + c) * PP, r0, r1, plane);
    }
  }
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
  hint_huge_pages(out, size_t(K * C * PP) * sizeof(T));  // fresh outputs fault per page
  const Shape s{N, C, H, W, PH, PW, sampling_ratio, spatial_scale, aligned};
  const Plan<T> pl = make_plan(rois, K, s, kPackForward);
  for (int64_t k : pl.skipped) std::fill(out + k * C * PP, out + (k + 1) * C * PP, T(0));
  const int64_t window = max_window(pl);
  const Tasks t = make_tasks<T>(s, K, window, K);
  const int64_t planes = t.G * window * L, per_thread = planes + PP * L;
  Scratch<T> buf(per_thread * t.nt);
#pragma omp parallel for schedule(dynamic, 1) num_threads(t.nt)
  for (int64_t task = 0; task < t.count; ++task) {
    const Share sh = share_of(pl, s, t, task);
    T* mine = buf.p + per_thread * thread_id();
    if (sh.i0 == sh.i1) continue;
    if (pl.packed[sh.n])
      forward_packed(input, pl, s, sh, mine, mine + planes, out);
    else
      forward_direct(input, pl, s, sh, out);
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
  hint_huge_pages(grad_input, size_t(N * C * H * W) * sizeof(T));
  const Shape s{N, C, H, W, PH, PW, sampling_ratio, spatial_scale, aligned};
  const Plan<T> pl = make_plan(rois, K, s, kPackBackward);
  const int64_t window = max_window(pl);
  const Tasks t = make_tasks<T>(s, K, window, H);
  int64_t band = 0;  // the largest band of a packed window
  for (int64_t n = 0; n < N; ++n)
    if (pl.packed[n]) band = std::max(band, ceil_div(pl.win[n].rows(), t.parts) * pl.win[n].cols());
  const int64_t planes = t.G * band * L, per_thread = planes + PP * L;
  Scratch<T> buf(per_thread * t.nt);
#pragma omp parallel for schedule(dynamic, 1) num_threads(t.nt)
  for (int64_t task = 0; task < t.count; ++task) {
    T* mine = buf.p + per_thread * thread_id();
    if (pl.packed[t.image(task)])
      backward_packed(grad_out, pl, s, t, task, mine, mine + planes, grad_input);
    else
      backward_direct(grad_out, pl, s, t, task, grad_input);
  }
}

#define FASTDET_INSTANTIATE(T)                                                                \
  template void roi_align_forward<T>(const T*, int64_t, int64_t, int64_t, int64_t, const T*,  \
                                     int64_t, int64_t, int64_t, double, int64_t, bool, T*);   \
  template void roi_align_backward<T>(const T*, int64_t, int64_t, int64_t, int64_t, const T*, \
                                      int64_t, int64_t, int64_t, double, int64_t, bool, T*);
FASTDET_INSTANTIATE(float)
FASTDET_INSTANTIATE(double)

}  // namespace fastdet::cpu
