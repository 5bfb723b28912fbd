// grid_anchors: one feature level's anchors, position-major then anchor (torchvision's order).
// Floor: writing gh*gw*A*4 values.
#include "parallel.h"

namespace fastdet::cpu {

template <typename T>
void grid_anchors(const T* base, int64_t A, int64_t gh, int64_t gw, double stride_h,
                  double stride_w, T* out) {
  const T sh = T(stride_h), sw = T(stride_w);
#pragma omp parallel for schedule(static) num_threads(threads_for(gh * gw * A, 1 << 16))
  for (int64_t y = 0; y < gh; ++y) {
    const T dy = T(y) * sh;
    T* o = out + y * gw * A * 4;
    for (int64_t x = 0; x < gw; ++x) {
      const T dx = T(x) * sw;
      for (int64_t a = 0; a < A; ++a, o += 4) {
        o[0] = dx + base[4 * a];
        o[1] = dy + base[4 * a + 1];
        o[2] = dx + base[4 * a + 2];
        o[3] = dy + base[4 * a + 3];
      }
    }
  }
}

template void grid_anchors<float>(const float*, int64_t, int64_t, int64_t, double, double, float*);
template void grid_anchors<double>(const double*, int64_t, int64_t, int64_t, double, double,
                                   double*);

}  // namespace fastdet::cpu
