// Mask pasting geometry shared by the CPU and CUDA kernels (paste_masks, masks_to_labels), with
// torchvision's paste_masks_in_image rules: the M x M mask padded by `padding` zeros to
// Mp = M + 2 padding, the box scaled about its centre by Mp / M in the box's own float type, the
// corners truncated toward zero to integers x0, y0, x2, y2, and the padded mask resized with
// F.interpolate's bilinear, align_corners=False arithmetic to w = max(x2 - x0 + 1, 1) columns
// and h rows, of which columns [max(x0, 0), min(x2 + 1, W)) and the matching rows are pasted.
#pragma once
#include <math.h>
#include <stdint.h>

#include "fastdet/box.h"  // FASTDET_HD

namespace fastdet {

// Corners beyond +-2^61 px are clamped before truncation, so widths cannot overflow int64
// (torchvision could not allocate such a resize anyway).
constexpr double kPasteCoordLimit = 2305843009213693952.0;  // 2^61

template <typename B> FASTDET_HD int64_t paste_trunc(B v) {
  const B lim = B(kPasteCoordLimit);
  if (!(v > -lim)) return -int64_t(kPasteCoordLimit);  // NaN cannot come (inputs are checked)
  if (v > lim) return int64_t(kPasteCoordLimit);
  return int64_t(v);  // toward zero, as torch's .to(int64)
}

struct Footprint {
  int64_t x0, y0;  // the resized mask's top-left pixel in the image
  int64_t w, h;    // the resized mask's size, >= 1
  int64_t c0, c1;  // image columns pasted: [c0, c1), empty when c1 <= c0
  int64_t r0, r1;  // image rows pasted
  FASTDET_HD bool empty() const { return c1 <= c0 || r1 <= r0; }
};

// box: 4 values of type B; scale = (M + 2 padding) / M as a double, used in B (torch multiplies
// a float tensor by a Python float in float).
template <typename B>
FASTDET_HD Footprint paste_footprint(const B* box, double scale, int64_t H, int64_t W) {
  const B s = B(scale), half = B(0.5);
  B w_half = (box[2] - box[0]) * half;
  B h_half = (box[3] - box[1]) * half;
  const B x_c = (box[2] + box[0]) * half;
  const B y_c = (box[3] + box[1]) * half;
  w_half = w_half * s;
  h_half = h_half * s;
  Footprint f;
  f.x0 = paste_trunc(x_c - w_half);
  f.y0 = paste_trunc(y_c - h_half);
  const int64_t x2 = paste_trunc(x_c + w_half), y2 = paste_trunc(y_c + h_half);
  f.w = x2 - f.x0 + 1;
  f.h = y2 - f.y0 + 1;
  if (f.w < 1) f.w = 1;
  if (f.h < 1) f.h = 1;
  f.c0 = f.x0 > 0 ? f.x0 : 0;
  f.c1 = x2 + 1 < W ? x2 + 1 : W;
  f.r0 = f.y0 > 0 ? f.y0 : 0;
  f.r1 = y2 + 1 < H ? y2 + 1 : H;
  return f;
}

// One output index d of a bilinear resize from n_in to n_out samples (align_corners=False), as
// F.interpolate computes it in T: source taps i0, i1 (indices into the padded mask) and their
// weights l0, l1; the source index is clamped at 0 and the upper tap at n_in - 1.
template <typename T> struct Tap2 {
  int64_t i0, i1;
  T l0, l1;
};

template <typename T> FASTDET_HD Tap2<T> resize_tap(int64_t d, int64_t n_in, int64_t n_out) {
  Tap2<T> t;
  if (n_in == n_out) {
    t.i0 = t.i1 = d;
    t.l0 = T(1);
    t.l1 = T(0);
    return t;
  }
  const T scale = T(n_in) / T(n_out);
  T src = scale * (T(d) + T(0.5)) - T(0.5);
  if (src < T(0)) src = T(0);
  int64_t i = int64_t(floor(src));
  if (i > n_in - 1) i = n_in - 1;
  T l = src - T(i);
  l = l < T(0) ? T(0) : (l > T(1) ? T(1) : l);
  t.i0 = i;
  t.i1 = i < n_in - 1 ? i + 1 : i;
  t.l1 = l;
  t.l0 = T(1) - l;
  return t;
}

}  // namespace fastdet
