// Box geometry shared by the CPU and CUDA kernels. Boxes are (x1, y1, x2, y2).
// Inverted or zero-size boxes have area 0 and IoU 0 with everything (never NaN).
#pragma once
#include <math.h>

#if defined(__CUDACC__)
#define FASTDET_HD __host__ __device__ __forceinline__
#else
#define FASTDET_HD inline
#endif

namespace fastdet {

template <typename T> FASTDET_HD T fmax_(T a, T b) { return a > b ? a : b; }
template <typename T> FASTDET_HD T fmin_(T a, T b) { return a < b ? a : b; }

template <typename T> FASTDET_HD T box_area(T x1, T y1, T x2, T y2) {
  return fmax_(x2 - x1, T(0)) * fmax_(y2 - y1, T(0));
}

template <typename T> FASTDET_HD T box_area(const T* b) { return box_area(b[0], b[1], b[2], b[3]); }

template <typename T> FASTDET_HD T intersection(const T* a, const T* b) {
  T w = fmin_(a[2], b[2]) - fmax_(a[0], b[0]);
  T h = fmin_(a[3], b[3]) - fmax_(a[1], b[1]);
  return fmax_(w, T(0)) * fmax_(h, T(0));
}

// IoU from an intersection and the two areas; 0 when the union is empty.
template <typename T> FASTDET_HD T iou_from(T inter, T area_a, T area_b) {
  T uni = area_a + area_b - inter;
  return uni > T(0) ? inter / uni : T(0);
}

template <typename T> FASTDET_HD T iou(const T* a, const T* b) {
  return iou_from(intersection(a, b), box_area(a), box_area(b));
}

// GIoU = IoU - (hull - union) / hull; 0 hull (both boxes degenerate at one point) gives 0.
template <typename T> FASTDET_HD T giou(const T* a, const T* b) {
  T inter = intersection(a, b);
  T uni = box_area(a) + box_area(b) - inter;
  T hw = fmax_(a[2], b[2]) - fmin_(a[0], b[0]);
  T hh = fmax_(a[3], b[3]) - fmin_(a[1], b[1]);
  T hull = fmax_(hw, T(0)) * fmax_(hh, T(0));
  T i = uni > T(0) ? inter / uni : T(0);
  return hull > T(0) ? i - (hull - uni) / hull : i;
}

// DIoU (Zheng et al., 2020) from the pair's IoU: IoU - d^2 / (c^2 + eps), d the distance of the
// centres and c the diagonal of the smallest enclosing box (torchvision's expression order).
template <typename T> FASTDET_HD T diou_from(const T* a, const T* b, T iou, T eps) {
  T hw = fmax_(fmax_(a[2], b[2]) - fmin_(a[0], b[0]), T(0));
  T hh = fmax_(fmax_(a[3], b[3]) - fmin_(a[1], b[1]), T(0));
  T diag = hw * hw + hh * hh + eps;
  T dx = (a[0] + a[2]) / T(2) - (b[0] + b[2]) / T(2);
  T dy = (a[1] + a[3]) / T(2) - (b[1] + b[3]) / T(2);
  T dist = dx * dx + dy * dy;
  return diag > T(0) ? iou - dist / diag : iou;  // eps = 0 and two equal points: no NaN
}

// CIoU's aspect angle atan(w / h). Inverted sides count as 0, and h = 0 gives pi/2 (or 0 for a
// point) where torchvision's w / h would give inf or NaN.
template <typename T> FASTDET_HD T aspect_angle(const T* b) {
  T w = fmax_(b[2] - b[0], T(0)), h = fmax_(b[3] - b[1], T(0));
  if (!(h > T(0))) return w > T(0) ? T(1.5707963267948966) : T(0);
  if constexpr (sizeof(T) == 4)
    return atanf(w / h);
  else
    return atan(w / h);
}

// CIoU = DIoU - alpha v, v = 4 / pi^2 (angle_a - angle_b)^2, alpha = v / (1 - IoU + v + eps).
template <typename T> FASTDET_HD T ciou_from(T diou, T iou, T angle_a, T angle_b, T eps) {
  T d = angle_a - angle_b;
  T v = T(0.40528473456935109) * (d * d);  // 4 / pi^2
  T den = T(1) - iou + v + eps;
  return den > T(0) ? diou - v / den * v : diou;
}

template <typename T> FASTDET_HD T diou(const T* a, const T* b, T eps) {
  return diou_from(a, b, iou(a, b), eps);
}

template <typename T> FASTDET_HD T ciou(const T* a, const T* b, T eps) {
  T i = iou(a, b);
  return ciou_from(diou_from(a, b, i, eps), i, aspect_angle(a), aspect_angle(b), eps);
}

}  // namespace fastdet
