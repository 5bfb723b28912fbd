// paste_masks and masks_to_labels: M x M mask probabilities pasted into an H x W image with
// torchvision's paste_masks_in_image rules (fastdet/paste.h), computing only each box's
// footprint instead of resizing every mask to its whole box and stacking full images.
//
// The masks are padded once into scratch (K * Mp * Mp), so a tap never tests the border. The
// bilinear value is computed in F.interpolate's separable order, (row i0 across x) * l0 + (row
// i1 across x) * l1, in T.
//
// paste_masks: tasks are (mask, band of rows); a task writes its band of its mask's plane
// entirely (zeros outside the footprint), so no separate zeroing pass and no two threads write
// one element.
//
// masks_to_labels: tasks are bands of image rows, and a task owns its band of the label image.
// Within it, masks are visited in `order` (decreasing score, ties lower index first: the caller
// sorts) and a pixel goes to the first mask that claims it (prob > threshold), so no score buffer
// and no reduction are needed, a claimed pixel is never computed again, and the result does not
// depend on the thread count.
#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "fastdet/paste.h"
#include "parallel.h"

namespace fastdet::cpu {
namespace {

// masks [K, M, M] -> pad [K, Mp, Mp] with `p` zeros around each.
template <typename T> void pad_masks(const T* masks, int64_t K, int64_t M, int64_t p, T* pad) {
  const int64_t Mp = M + 2 * p;
#pragma omp parallel for schedule(static) num_threads(threads_for(K * Mp * Mp, 1 << 16))
  for (int64_t k = 0; k < K; ++k) {
    T* d = pad + k * Mp * Mp;
    std::fill(d, d + Mp * Mp, T(0));
    for (int64_t r = 0; r < M; ++r)
      std::memcpy(d + (r + p) * Mp + p, masks + (k * M + r) * M, sizeof(T) * M);
  }
}

template <typename B>
std::vector<Footprint> footprints(const B* boxes, int64_t K, double scale, int64_t H, int64_t W) {
  std::vector<Footprint> f(K);
  for (int64_t k = 0; k < K; ++k) f[k] = paste_footprint(boxes + 4 * k, scale, H, W);
  return f;
}

// Column taps of footprint f over its pasted columns [c0, c1), into per-thread scratch.
template <typename T> struct Columns {
  int64_t* i0;
  int64_t* i1;
  T* l0;
  T* l1;
  void fill(const Footprint& f, int64_t Mp) {
    for (int64_t x = f.c0; x < f.c1; ++x) {
      const Tap2<T> t = resize_tap<T>(x - f.x0, Mp, f.w);
      const int64_t j = x - f.c0;
      i0[j] = t.i0;
      i1[j] = t.i1;
      l0[j] = t.l0;
      l1[j] = t.l1;
    }
  }
};

// Bilinear value of column j of footprint row taps (a: padded row i0, b: row i1).
template <typename T>
inline T value(const T* a, const T* b, const Columns<T>& c, int64_t j, T ly0, T ly1) {
  const T t0 = a[c.i0[j]] * c.l0[j] + a[c.i1[j]] * c.l1[j];
  const T t1 = b[c.i0[j]] * c.l0[j] + b[c.i1[j]] * c.l1[j];
  return t0 * ly0 + t1 * ly1;
}

// Per-thread scratch for the column taps of one footprint (at most W columns).
template <typename T> struct ColumnScratch {
  std::vector<int64_t> idx;
  std::vector<T> w;
  int64_t W;
  ColumnScratch(int nt, int64_t W) : idx(2 * W * nt), w(2 * W * nt), W(W) {}
  Columns<T> of(int t) {
    return {idx.data() + 2 * W * t, idx.data() + 2 * W * t + W, w.data() + 2 * W * t,
            w.data() + 2 * W * t + W};
  }
};

// One band [y0, y1) of plane k: probabilities (O = T) or prob > threshold (O = uint8_t).
template <typename T, typename O>
void paste_band(const T* pad, int64_t Mp, const Footprint& f, int64_t y0, int64_t y1, int64_t W,
                Columns<T> cols, T thr, O* plane) {
  const int64_t r0 = std::max(y0, f.r0), r1 = std::min(y1, f.r1);
  if (f.empty() || r1 <= r0) {
    std::fill(plane + y0 * W, plane + y1 * W, O(0));
    return;
  }
  std::fill(plane + y0 * W, plane + r0 * W, O(0));
  std::fill(plane + r1 * W, plane + y1 * W, O(0));
  cols.fill(f, Mp);
  const int64_t n = f.c1 - f.c0;
  for (int64_t y = r0; y < r1; ++y) {
    O* o = plane + y * W;
    std::fill(o, o + f.c0, O(0));
    std::fill(o + f.c1, o + W, O(0));
    const Tap2<T> ty = resize_tap<T>(y - f.y0, Mp, f.h);
    const T *a = pad + ty.i0 * Mp, *b = pad + ty.i1 * Mp;
    o += f.c0;
    for (int64_t j = 0; j < n; ++j) {
      const T v = value(a, b, cols, j, ty.l0, ty.l1);
      if constexpr (std::is_same_v<O, T>)
        o[j] = v;
      else
        o[j] = v > thr;
    }
  }
}

template <typename T, typename B, typename O>
void paste_impl(const T* masks, int64_t K, int64_t M, const B* boxes, int64_t padding, int64_t H,
                int64_t W, double threshold, O* out) {
  if (K <= 0 || H <= 0 || W <= 0) return;
  hint_huge_pages(out, size_t(K * H * W) * sizeof(O));
  const int64_t Mp = M + 2 * padding;
  std::vector<T> pad(static_cast<size_t>(K * Mp * Mp));
  pad_masks(masks, K, M, padding, pad.data());
  const std::vector<Footprint> fp = footprints(boxes, K, double(Mp) / double(M), H, W);
  // Bands of at least 32 rows, enough of them that small K still fills the threads.
  const int nt = threads_for(K * H * W, 1 << 15);
  const int64_t bands = std::max<int64_t>(1, std::min(ceil_div(H, 32), ceil_div(4 * nt, K)));
  const int64_t rows = ceil_div(H, bands);
  ColumnScratch<T> cs(nt, W);
  const T thr = T(threshold);
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
  for (int64_t task = 0; task < K * bands; ++task) {
    const int64_t k = task / bands, b = task % bands;
    const int64_t y0 = std::min(H, b * rows), y1 = std::min(H, y0 + rows);
    if (y0 < y1)
      paste_band(pad.data() + k * Mp * Mp, Mp, fp[k], y0, y1, W, cs.of(thread_id()), thr,
                 out + k * H * W);
  }
}

constexpr int64_t kLabelRows = 8;  // rows per masks_to_labels task

}  // namespace

template <typename T, typename B>
void paste_masks(const T* masks, int64_t K, int64_t M, const B* boxes, int64_t padding, int64_t H,
                 int64_t W, T* out) {
  paste_impl(masks, K, M, boxes, padding, H, W, 0.0, out);
}

template <typename T, typename B>
void paste_masks_binary(const T* masks, int64_t K, int64_t M, const B* boxes, int64_t padding,
                        int64_t H, int64_t W, double threshold, uint8_t* out) {
  paste_impl(masks, K, M, boxes, padding, H, W, threshold, out);
}

template <typename T, typename B>
void masks_to_labels(const T* masks, int64_t K, int64_t M, const B* boxes, const int64_t* order,
                     int64_t padding, int64_t H, int64_t W, double threshold, int32_t* out) {
  if (H <= 0 || W <= 0) return;
  const int64_t bands = ceil_div(H, kLabelRows);
  const T thr = T(threshold);
  if (!boxes) {  // full-size masks [K, H, W]: the first mask in order above threshold
    const int nt = threads_for(std::max<int64_t>(K, 1) * H * W, 1 << 15);
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
    for (int64_t b = 0; b < bands; ++b) {
      const int64_t y0 = b * kLabelRows, y1 = std::min(H, y0 + kLabelRows);
      int32_t* o = out + y0 * W;
      const int64_t n = (y1 - y0) * W;
      std::fill(o, o + n, 0);
      for (int64_t i = 0; i < K; ++i) {
        const int64_t k = order[i];
        const T* m = masks + k * H * W + y0 * W;
        const int32_t label = static_cast<int32_t>(k + 1);
        for (int64_t j = 0; j < n; ++j)
          if (o[j] == 0 && m[j] > thr) o[j] = label;
      }
    }
    return;
  }
  const int64_t Mp = M + 2 * padding;
  std::vector<T> pad(static_cast<size_t>(std::max<int64_t>(K, 0) * Mp * Mp));
  if (K > 0) pad_masks(masks, K, M, padding, pad.data());
  const std::vector<Footprint> fp =
      footprints(boxes, std::max<int64_t>(K, 0), double(Mp) / double(M), H, W);
  int64_t work = 0;  // footprint pixels
  for (const Footprint& f : fp)
    if (!f.empty()) work += (f.r1 - f.r0) * (f.c1 - f.c0);
  const int nt = threads_for(work + H * W, 1 << 15);
  ColumnScratch<T> cs(nt, W);
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
  for (int64_t b = 0; b < bands; ++b) {
    const int64_t y0 = b * kLabelRows, y1 = std::min(H, y0 + kLabelRows);
    std::fill(out + y0 * W, out + y1 * W, 0);
    Columns<T> cols = cs.of(thread_id());
    for (int64_t i = 0; i < K; ++i) {
      const int64_t k = order[i];
      const Footprint& f = fp[k];
      const int64_t r0 = std::max(y0, f.r0), r1 = std::min(y1, f.r1);
      if (f.empty() || r1 <= r0) continue;
      cols.fill(f, Mp);
      const T* pk = pad.data() + k * Mp * Mp;
      const int32_t label = static_cast<int32_t>(k + 1);
      for (int64_t y = r0; y < r1; ++y) {
        int32_t* o = out + y * W + f.c0;
        const Tap2<T> ty = resize_tap<T>(y - f.y0, Mp, f.h);
        const T *a = pk + ty.i0 * Mp, *c = pk + ty.i1 * Mp;
        for (int64_t j = 0; j < f.c1 - f.c0; ++j)
          if (o[j] == 0 && value(a, c, cols, j, ty.l0, ty.l1) > thr) o[j] = label;
      }
    }
  }
}

#define FASTDET_INSTANTIATE(T, B)                                                                  \
  template void paste_masks<T, B>(const T*, int64_t, int64_t, const B*, int64_t, int64_t, int64_t, \
                                  T*);                                                             \
  template void paste_masks_binary<T, B>(const T*, int64_t, int64_t, const B*, int64_t, int64_t,   \
                                         int64_t, double, uint8_t*);                               \
  template void masks_to_labels<T, B>(const T*, int64_t, int64_t, const B*, const int64_t*,        \
                                      int64_t, int64_t, int64_t, double, int32_t*);
FASTDET_INSTANTIATE(float, float)
FASTDET_INSTANTIATE(float, double)
FASTDET_INSTANTIATE(double, float)
FASTDET_INSTANTIATE(double, double)

}  // namespace fastdet::cpu
