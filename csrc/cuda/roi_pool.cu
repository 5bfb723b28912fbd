// roi_pool forward and backward with torchvision.ops.roi_pool's arithmetic (see
// csrc/cpu/roi_pool.cpp for the rules): one thread per output element (roi, c, ph, pw), pw
// fastest, so neighbouring threads scan neighbouring windows of one plane.
// Floors: forward, K*C*PH*PW windows scanned (L1/L2 hits for the most part) and two writes each
// (one where argmax is null);
// backward, one atomic add per pooled element after zeroing grad_input (N*C*H*W*sizeof(T)).
// A batch index outside [0, N) gives 0 and argmax -1 (torchvision reads out of bounds).
#include <cfloat>
#include <cmath>

#include "common.cuh"
#include "fastdet/ops.h"

namespace fastdet::cuda {
namespace {
using namespace detail;

// Rounded, scaled coordinate (half away from zero, as torchvision), clamped so that NaN or huge
// values cannot overflow the integers.
template <typename T> __device__ __forceinline__ long long scaled(T v, T scale) {
  const T r = round(v * scale), lim = T(1 << 30);
  if (!(r >= -lim)) return -(1LL << 30);  // NaN too
  return r > lim ? (1LL << 30) : (long long)r;
}

// Bin p's [lo, hi) along one axis of extent `size`.
template <typename T>
__device__ __forceinline__ void bin_range(T start_coord, T end_coord, T scale, int p, int P,
                                          int size, int& lo, int& hi) {
  const long long start = scaled(start_coord, scale), end = scaled(end_coord, scale);
  const long long extent = end - start + 1;
  const T bin = T(extent > 1 ? extent : 1) / T(P);
  const long long a = (long long)floor(T(p) * bin) + start;
  const long long b = (long long)ceil(T(p + 1) * bin) + start;
  lo = int(a < 0 ? 0 : (a > size ? size : a));
  hi = int(b < 0 ? 0 : (b > size ? size : b));
}

template <typename T>
__global__ void roi_pool_forward_kernel(const T* __restrict__ input, int N, int C, int H, int W,
                                        const T* __restrict__ rois, int64_t total, int PH, int PW,
                                        T scale, T* __restrict__ out, int* __restrict__ argmax) {
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int pw = int(e % PW), ph = int(e / PW % PH), c = int(e / (int64_t(PW) * PH) % C);
    const int64_t k = e / (int64_t(PW) * PH * C);
    const T* r = rois + k * 5;
    const int b = int(r[0]);
    if (b < 0 || b >= N) {
      out[e] = T(0);
      if (argmax) argmax[e] = -1;
      continue;
    }
    int ya, yb, xa, xb;
    bin_range(r[2], r[4], scale, ph, PH, H, ya, yb);
    bin_range(r[1], r[3], scale, pw, PW, W, xa, xb);
    const bool empty = yb <= ya || xb <= xa;
    T best = empty ? T(0) : (sizeof(T) == 4 ? T(-FLT_MAX) : T(-DBL_MAX));
    int at = -1;
    const T* plane = input + (int64_t(b) * C + c) * H * W;
    for (int y = ya; y < yb; ++y)
      for (int x = xa; x < xb; ++x) {
        const T v = plane[int64_t(y) * W + x];
        if (v > best) {
          best = v;
          at = y * W + x;
        }
      }
    out[e] = best;
    if (argmax) argmax[e] = at;  // null: inference, no backward to route
  }
}

template <typename T>
__global__ void roi_pool_backward_kernel(const T* __restrict__ grad_out,
                                         const int* __restrict__ argmax, const T* __restrict__ rois,
                                         int64_t total, int N, int C, int64_t plane, int64_t per,
                                         T* __restrict__ grad_input) {
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int at = argmax[e];
    if (at < 0) continue;
    const int64_t kc = e / per, k = kc / C, c = kc % C;
    const int b = int(rois[k * 5]);
    if (b < 0 || b >= N) continue;
    atomicAdd(grad_input + (b * C + c) * plane + at, grad_out[e]);
  }
}

}  // namespace

template <typename T>
void roi_pool_forward(const T* input, int64_t N, int64_t C, int64_t H, int64_t W, const T* rois,
                      int64_t K, int64_t PH, int64_t PW, double spatial_scale, T* out,
                      int32_t* argmax, int device, void* stream) {
  const int64_t total = K * C * PH * PW;
  if (total <= 0) return;
  require_int32(H * W, "roi_pool height * width");
  require_int32(N * C, "roi_pool batch * channels");
  DeviceGuard guard(device);
  roi_pool_forward_kernel<T><<<grid_1d(total), kThreads, 0, as_stream(stream)>>>(
      input, int(N), int(C), int(H), int(W), rois, total, int(PH), int(PW), T(spatial_scale), out,
      argmax);
  FASTDET_CUDA_CHECK_LAUNCH();
}

template <typename T>
void roi_pool_backward(const T* grad_out, const int32_t* argmax, const T* rois, int64_t K,
                       int64_t N, int64_t C, int64_t H, int64_t W, int64_t PH, int64_t PW,
                       T* grad_input, int device, void* stream) {
  DeviceGuard guard(device);
  cudaStream_t s = as_stream(stream);
  const int64_t n_in = N * C * H * W;
  if (n_in > 0) FASTDET_CUDA_CHECK(cudaMemsetAsync(grad_input, 0, n_in * sizeof(T), s));
  const int64_t total = K * C * PH * PW;
  if (total <= 0 || n_in <= 0) return;
  require_int32(N * C, "roi_pool batch * channels");
  roi_pool_backward_kernel<T><<<grid_1d(total), kThreads, 0, s>>>(
      grad_out, argmax, rois, total, int(N), int(C), H * W, PH * PW, grad_input);
  FASTDET_CUDA_CHECK_LAUNCH();
}

#define FASTDET_INSTANTIATE(T)                                                                    \
  template void roi_pool_forward<T>(const T*, int64_t, int64_t, int64_t, int64_t, const T*,       \
                                    int64_t, int64_t, int64_t, double, T*, int32_t*, int, void*); \
  template void roi_pool_backward<T>(const T*, const int32_t*, const T*, int64_t, int64_t,        \
                                     int64_t, int64_t, int64_t, int64_t, int64_t, T*, int, void*);
FASTDET_INSTANTIATE(float)
FASTDET_INSTANTIATE(double)

}  // namespace fastdet::cuda
