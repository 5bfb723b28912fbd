// clip_boxes: x clamped to [0, width], y to [0, height], with std::clamp's rule (NaN passes
// through) like the CPU kernel. Floor: reading and writing n * 4 values once.
#include "common.cuh"
#include "fastdet/ops.h"

namespace fastdet::cuda {
namespace {
using namespace detail;

template <typename T> __device__ __forceinline__ T clamp_std(T v, T hi) {
  return v < T(0) ? T(0) : (hi < v ? hi : v);
}

// One thread per coordinate: coalesced, and x / y picked by the index parity.
template <typename T>
__global__ void clip_kernel(const T* __restrict__ boxes, int64_t count, T h, T w,
                            T* __restrict__ out) {
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < count;
       e += int64_t(gridDim.x) * blockDim.x)
    out[e] = clamp_std(boxes[e], (e & 1) ? h : w);
}

}  // namespace

template <typename T>
void clip_boxes(const T* boxes, int64_t n, double height, double width, T* out, int device,
                void* stream) {
  if (n <= 0) return;
  DeviceGuard guard(device);
  clip_kernel<T>
      <<<grid_1d(4 * n), kThreads, 0, as_stream(stream)>>>(boxes, 4 * n, T(height), T(width), out);
  FASTDET_CUDA_CHECK_LAUNCH();
}

template void clip_boxes<float>(const float*, int64_t, double, double, float*, int, void*);
template void clip_boxes<double>(const double*, int64_t, double, double, double*, int, void*);

}  // namespace fastdet::cuda
