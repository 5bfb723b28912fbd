// encode_boxes / decode_boxes: torchvision BoxCoder.encode_single / decode_single, fused.
// Floor: reading the inputs and writing the output once.
#include <algorithm>
#include <cmath>

#include "parallel.h"

namespace fastdet::cpu {

template <typename T>
void encode_boxes(const T* gt, const T* proposals, int64_t n, const double* weights, T* out) {
  const T wx = T(weights[0]), wy = T(weights[1]), ww = T(weights[2]), wh = T(weights[3]);
#pragma omp parallel for schedule(static) num_threads(threads_for(n, 1 << 15))
  for (int64_t i = 0; i < n; ++i) {
    const T* p = proposals + 4 * i;
    const T* g = gt + 4 * i;
    T pw = p[2] - p[0], ph = p[3] - p[1];
    T px = p[0] + T(0.5) * pw, py = p[1] + T(0.5) * ph;
    T gw = g[2] - g[0], gh = g[3] - g[1];
    T gx = g[0] + T(0.5) * gw, gy = g[1] + T(0.5) * gh;
    T* o = out + 4 * i;
    o[0] = wx * (gx - px) / pw;
    o[1] = wy * (gy - py) / ph;
    o[2] = ww * std::log(gw / pw);
    o[3] = wh * std::log(gh / ph);
  }
}

template <typename T>
void decode_boxes(const T* codes, const T* boxes, int64_t n, int64_t k, const double* weights,
                  double clip, T* out) {
  const T wx = T(weights[0]), wy = T(weights[1]), ww = T(weights[2]), wh = T(weights[3]);
  const T c = T(clip);
#pragma omp parallel for schedule(static) num_threads(threads_for(n* k, 1 << 15))
  for (int64_t i = 0; i < n; ++i) {
    const T* b = boxes + 4 * i;
    T w = b[2] - b[0], h = b[3] - b[1];
    T cx = b[0] + T(0.5) * w, cy = b[1] + T(0.5) * h;
    for (int64_t j = 0; j < k; ++j) {
      const T* d = codes + (i * k + j) * 4;
      T dx = d[0] / wx, dy = d[1] / wy;
      T dw = std::min(d[2] / ww, c), dh = std::min(d[3] / wh, c);
      T pcx = dx * w + cx, pcy = dy * h + cy;
      T pw = std::exp(dw) * w, ph = std::exp(dh) * h;
      T* o = out + (i * k + j) * 4;
      o[0] = pcx - T(0.5) * pw;
      o[1] = pcy - T(0.5) * ph;
      o[2] = pcx + T(0.5) * pw;
      o[3] = pcy + T(0.5) * ph;
    }
  }
}

#define FASTDET_INSTANTIATE(T)                                                   \
  template void encode_boxes<T>(const T*, const T*, int64_t, const double*, T*); \
  template void decode_boxes<T>(const T*, const T*, int64_t, int64_t, const double*, double, T*);
FASTDET_INSTANTIATE(float)
FASTDET_INSTANTIATE(double)

}  // namespace fastdet::cpu
