// box_area and the pairwise IoU family (IoU, GIoU, DIoU, CIoU): one fused pass writing the
// batch x n x m output. Floor: the output write (batch*n*m*sizeof(T) bytes); the inputs are
// O(batch*(n+m)) and stay in cache.
#include <vector>

#include "fastdet/box.h"
#include "parallel.h"

namespace fastdet::cpu {
namespace {

// Columns of b as separate arrays so the inner loop over j vectorises, with the per-box terms
// (area, centre, CIoU's aspect angle) computed once per box instead of once per pair.
template <typename T> struct Soa {
  std::vector<T> x1, y1, x2, y2, area, cx, cy, angle;
  Soa(const T* b, int64_t m, bool centres, bool angles)
      : x1(m),
        y1(m),
        x2(m),
        y2(m),
        area(m),
        cx(centres ? m : 0),
        cy(centres ? m : 0),
        angle(angles ? m : 0) {
    for (int64_t j = 0; j < m; ++j) {
      const T* p = b + 4 * j;
      x1[j] = p[0];
      y1[j] = p[1];
      x2[j] = p[2];
      y2[j] = p[3];
      area[j] = fastdet::box_area(p);
      if (centres) {
        cx[j] = (p[0] + p[2]) / T(2);
        cy[j] = (p[1] + p[3]) / T(2);
      }
      if (angles) angle[j] = fastdet::aspect_angle(p);
    }
  }
};

// One batch's columns: pointers into a Soa at that batch's first box.
template <typename T> struct Cols {
  const T *x1, *y1, *x2, *y2, *area, *cx, *cy, *angle;
  Cols(const Soa<T>& s, int64_t off)
      : x1(s.x1.data() + off),
        y1(s.y1.data() + off),
        x2(s.x2.data() + off),
        y2(s.y2.data() + off),
        area(s.area.data() + off),
        cx(s.cx.empty() ? nullptr : s.cx.data() + off),
        cy(s.cy.empty() ? nullptr : s.cy.data() + off),
        angle(s.angle.empty() ? nullptr : s.angle.data() + off) {}
};

// A divisor that is never 0. A conditional division would keep the loops scalar (the compiler
// may not speculate a divide); this way they vectorise and give box.h's values: union 0 means
// both areas and the intersection are 0 (0 / 1 = 0), hull 0 means the union is 0 too, and the
// DIoU / CIoU denominators are only 0 where their numerators are.
template <typename T> inline T safe(T d) { return d > T(0) ? d : T(1); }

// out[j] for one box a against m boxes, for each kind; the expressions are box.h's.
template <typename T, int KIND>
FASTDET_CLONES void pair_row(const T* a, const Cols<T>& c, int64_t m, T eps, T* out) {
  const T ax1 = a[0], ay1 = a[1], ax2 = a[2], ay2 = a[3], aa = fastdet::box_area(a);
  const T acx = (ax1 + ax2) / T(2), acy = (ay1 + ay2) / T(2);
  const T aang = KIND == kCiou ? fastdet::aspect_angle(a) : T(0);
  const T k4 = T(0.40528473456935109);  // 4 / pi^2
  const T *x1 = c.x1, *y1 = c.y1, *x2 = c.x2, *y2 = c.y2, *ar = c.area;
  const T *cx = c.cx, *cy = c.cy, *ang = c.angle;
#pragma omp simd
  for (int64_t j = 0; j < m; ++j) {
    T w = fmax_(fmin_(ax2, x2[j]) - fmax_(ax1, x1[j]), T(0));
    T h = fmax_(fmin_(ay2, y2[j]) - fmax_(ay1, y1[j]), T(0));
    T inter = w * h;
    T uni = aa + ar[j] - inter;
    T val = inter / safe(uni);
    if constexpr (KIND != kIou) {
      T hw = fmax_(fmax_(ax2, x2[j]) - fmin_(ax1, x1[j]), T(0));
      T hh = fmax_(fmax_(ay2, y2[j]) - fmin_(ay1, y1[j]), T(0));
      if constexpr (KIND == kGiou) {
        T hull = hw * hh;
        val -= (hull - uni) / safe(hull);
      } else {
        const T iou = val;
        T diag = hw * hw + hh * hh + eps;
        T dx = acx - cx[j], dy = acy - cy[j];
        T dist = dx * dx + dy * dy;
        val -= diag > T(0) ? dist / safe(diag) : T(0);
        if constexpr (KIND == kCiou) {
          T d = aang - ang[j];
          T v = k4 * (d * d);
          T den = T(1) - iou + v + eps;
          val -= den > T(0) ? v / safe(den) * v : T(0);
        }
      }
    }
    out[j] = val;
  }
}

template <typename T, int KIND>
void pairwise(const T* a, const T* b, int64_t batch, int64_t n, int64_t m, T eps, T* out) {
  if (batch <= 0 || n <= 0 || m <= 0) return;
  hint_huge_pages(out, size_t(batch) * size_t(n) * size_t(m) * sizeof(T));
  Soa<T> s(b, batch * m, KIND >= kDiou, KIND == kCiou);
  const int64_t rows = batch * n;
#pragma omp parallel for schedule(static) num_threads(threads_for(rows* m, 1 << 16))
  for (int64_t r = 0; r < rows; ++r) {
    const Cols<T> c(s, r / n * m);
    pair_row<T, KIND>(a + 4 * r, c, m, eps, out + r * m);
  }
}

}  // namespace

template <typename T> void box_area(const T* boxes, int64_t n, T* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = fastdet::box_area(boxes + 4 * i);
}

template <typename T> void box_iou(const T* a, int64_t n, const T* b, int64_t m, T* out) {
  pairwise<T, kIou>(a, b, 1, n, m, T(0), out);
}

template <typename T>
void generalized_box_iou(const T* a, int64_t n, const T* b, int64_t m, T* out) {
  pairwise<T, kGiou>(a, b, 1, n, m, T(0), out);
}

template <typename T>
void pairwise_iou(IouKind kind, const T* a, const T* b, int64_t batch, int64_t n, int64_t m,
                  double eps, T* out) {
  const T e = T(eps);
  switch (kind) {
    case kIou:
      return pairwise<T, kIou>(a, b, batch, n, m, e, out);
    case kGiou:
      return pairwise<T, kGiou>(a, b, batch, n, m, e, out);
    case kDiou:
      return pairwise<T, kDiou>(a, b, batch, n, m, e, out);
    case kCiou:
      return pairwise<T, kCiou>(a, b, batch, n, m, e, out);
  }
}

#define FASTDET_INSTANTIATE(T)                                                    \
  template void box_area<T>(const T*, int64_t, T*);                               \
  template void box_iou<T>(const T*, int64_t, const T*, int64_t, T*);             \
  template void generalized_box_iou<T>(const T*, int64_t, const T*, int64_t, T*); \
  template void pairwise_iou<T>(IouKind, const T*, const T*, int64_t, int64_t, int64_t, double, T*);
FASTDET_INSTANTIATE(float)
FASTDET_INSTANTIATE(double)

}  // namespace fastdet::cpu
