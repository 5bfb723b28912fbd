// Box geometry shared by the CPU and CUDA kernels. Boxes are (x1, y1, x2, y2).
// Inverted or zero-size boxes have area 0 and IoU 0 with everything (never NaN).
#pragma once

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

}  // namespace fastdet
