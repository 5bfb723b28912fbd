// box_area, box_iou, generalized_box_iou: one fused pass writing the n x m output.
// Floor: the output write (n*m*sizeof(T) bytes); the inputs are O(n+m) and stay in cache.
#include <vector>

#include "fastdet/box.h"
#include "parallel.h"

namespace fastdet::cpu {
namespace {

// Columns of b as separate arrays so the inner loop over j vectorises.
template <typename T> struct Soa {
  std::vector<T> x1, y1, x2, y2, area;
  Soa(const T* b, int64_t m) : x1(m), y1(m), x2(m), y2(m), area(m) {
    for (int64_t j = 0; j < m; ++j) {
      x1[j] = b[4 * j];
      y1[j] = b[4 * j + 1];
      x2[j] = b[4 * j + 2];
      y2[j] = b[4 * j + 3];
      area[j] = fastdet::box_area(b + 4 * j);
    }
  }
};

// A divisor that is never 0. A conditional division would keep the loops scalar (the compiler
// may not speculate a divide); this way they vectorise and give box.h's values: union 0 means
// both areas and the intersection are 0 (0 / 1 = 0), hull 0 means the union is 0 too.
template <typename T> inline T safe(T d) { return d > T(0) ? d : T(1); }

template <typename T> FASTDET_CLONES void iou_row(const T* a, const Soa<T>& s, int64_t m, T* out) {
  const T ax1 = a[0], ay1 = a[1], ax2 = a[2], ay2 = a[3], aa = fastdet::box_area(a);
  const T *x1 = s.x1.data(), *y1 = s.y1.data(), *x2 = s.x2.data(), *y2 = s.y2.data();
  const T* ar = s.area.data();
#pragma omp simd
  for (int64_t j = 0; j < m; ++j) {
    T w = fmax_(fmin_(ax2, x2[j]) - fmax_(ax1, x1[j]), T(0));
    T h = fmax_(fmin_(ay2, y2[j]) - fmax_(ay1, y1[j]), T(0));
    T inter = w * h;
    T uni = aa + ar[j] - inter;
    out[j] = inter / safe(uni);
  }
}

template <typename T> FASTDET_CLONES void giou_row(const T* a, const Soa<T>& s, int64_t m, T* out) {
  const T ax1 = a[0], ay1 = a[1], ax2 = a[2], ay2 = a[3], aa = fastdet::box_area(a);
  const T *x1 = s.x1.data(), *y1 = s.y1.data(), *x2 = s.x2.data(), *y2 = s.y2.data();
  const T* ar = s.area.data();
#pragma omp simd
  for (int64_t j = 0; j < m; ++j) {
    T w = fmax_(fmin_(ax2, x2[j]) - fmax_(ax1, x1[j]), T(0));
    T h = fmax_(fmin_(ay2, y2[j]) - fmax_(ay1, y1[j]), T(0));
    T inter = w * h;
    T uni = aa + ar[j] - inter;
    T hw = fmax_(fmax_(ax2, x2[j]) - fmin_(ax1, x1[j]), T(0));
    T hh = fmax_(fmax_(ay2, y2[j]) - fmin_(ay1, y1[j]), T(0));
    T hull = hw * hh;
    T iou = inter / safe(uni);
    out[j] = iou - (hull - uni) / safe(hull);
  }
}

template <typename T, typename Row>
void pairwise(const T* a, int64_t n, const T* b, int64_t m, T* out, Row row) {
  if (n == 0 || m == 0) return;
  hint_huge_pages(out, size_t(n) * size_t(m) * sizeof(T));
  Soa<T> s(b, m);
#pragma omp parallel for schedule(static) num_threads(threads_for(n* m, 1 << 16))
  for (int64_t i = 0; i < n; ++i) row(a + 4 * i, s, m, out + i * m);
}

}  // namespace

template <typename T> void box_area(const T* boxes, int64_t n, T* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = fastdet::box_area(boxes + 4 * i);
}

template <typename T> void box_iou(const T* a, int64_t n, const T* b, int64_t m, T* out) {
  pairwise(a, n, b, m, out, iou_row<T>);
}

template <typename T>
void generalized_box_iou(const T* a, int64_t n, const T* b, int64_t m, T* out) {
  pairwise(a, n, b, m, out, giou_row<T>);
}

#define FASTDET_INSTANTIATE(T)                                        \
  template void box_area<T>(const T*, int64_t, T*);                   \
  template void box_iou<T>(const T*, int64_t, const T*, int64_t, T*); \
  template void generalized_box_iou<T>(const T*, int64_t, const T*, int64_t, T*);
FASTDET_INSTANTIATE(float)
FASTDET_INSTANTIATE(double)

}  // namespace fastdet::cpu
