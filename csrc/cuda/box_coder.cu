// encode_boxes / decode_boxes: torchvision BoxCoder.encode_single / decode_single, fused, in T
// (float in float, double in double) with the CPU kernels' expressions and operation order.
// Floor: reading the inputs and writing the output once (one thread per box / code group).
// weights is a host array of 4 doubles (wx, wy, ww, wh), passed to the kernels by value.
#include "common.cuh"
#include "fastdet/ops.h"

namespace fastdet::cuda {
namespace {
using namespace detail;

template <typename T> struct Weights {
  T x, y, w, h;
};

template <typename T> Weights<T> to_weights(const double* w) {
  return {T(w[0]), T(w[1]), T(w[2]), T(w[3])};
}

template <typename T>
__global__ void encode_kernel(const T* __restrict__ gt, const T* __restrict__ proposals, int64_t n,
                              Weights<T> wt, T* __restrict__ out) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const T* p = proposals + 4 * i;
    const T* g = gt + 4 * i;
    const T pw = p[2] - p[0], ph = p[3] - p[1];
    const T px = p[0] + T(0.5) * pw, py = p[1] + T(0.5) * ph;
    const T gw = g[2] - g[0], gh = g[3] - g[1];
    const T gx = g[0] + T(0.5) * gw, gy = g[1] + T(0.5) * gh;
    T* o = out + 4 * i;
    o[0] = wt.x * (gx - px) / pw;
    o[1] = wt.y * (gy - py) / ph;
    o[2] = wt.w * log(gw / pw);
    o[3] = wt.h * log(gh / ph);
  }
}

// std::min's rule (NaN in a stays NaN), unlike fmin.
template <typename T> __device__ __forceinline__ T min_std(T a, T b) { return b < a ? b : a; }

template <typename T>
__global__ void decode_kernel(const T* __restrict__ codes, const T* __restrict__ boxes, int64_t n,
                              int64_t k, Weights<T> wt, T clip, T* __restrict__ out) {
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n * k;
       e += int64_t(gridDim.x) * blockDim.x) {
    const T* b = boxes + 4 * (e / k);
    const T w = b[2] - b[0], h = b[3] - b[1];
    const T cx = b[0] + T(0.5) * w, cy = b[1] + T(0.5) * h;
    const T* d = codes + 4 * e;
    const T dx = d[0] / wt.x, dy = d[1] / wt.y;
    const T dw = min_std(d[2] / wt.w, clip), dh = min_std(d[3] / wt.h, clip);
    const T pcx = dx * w + cx, pcy = dy * h + cy;
    const T pw = exp(dw) * w, ph = exp(dh) * h;
    T* o = out + 4 * e;
    o[0] = pcx - T(0.5) * pw;
    o[1] = pcy - T(0.5) * ph;
    o[2] = pcx + T(0.5) * pw;
    o[3] = pcy + T(0.5) * ph;
  }
}

}  // namespace

template <typename T>
void encode_boxes(const T* gt, const T* proposals, int64_t n, const double* weights, T* out,
                  int device, void* stream) {
  if (n <= 0) return;
  DeviceGuard guard(device);
  encode_kernel<T><<<grid_1d(n), kThreads, 0, as_stream(stream)>>>(gt, proposals, n,
                                                                   to_weights<T>(weights), out);
  FASTDET_CUDA_CHECK_LAUNCH();
}

template <typename T>
void decode_boxes(const T* codes, const T* boxes, int64_t n, int64_t k, const double* weights,
                  double clip, T* out, int device, void* stream) {
  if (n <= 0 || k <= 0) return;
  DeviceGuard guard(device);
  decode_kernel<T><<<grid_1d(n * k), kThreads, 0, as_stream(stream)>>>(
      codes, boxes, n, k, to_weights<T>(weights), T(clip), out);
  FASTDET_CUDA_CHECK_LAUNCH();
}

#define FASTDET_INSTANTIATE(T)                                                                   \
  template void encode_boxes<T>(const T*, const T*, int64_t, const double*, T*, int, void*);     \
  template void decode_boxes<T>(const T*, const T*, int64_t, int64_t, const double*, double, T*, \
                                int, void*);
FASTDET_INSTANTIATE(float)
FASTDET_INSTANTIATE(double)

}  // namespace fastdet::cuda
