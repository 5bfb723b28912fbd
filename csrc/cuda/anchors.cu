// grid_anchors: one feature level's anchors, position-major then anchor (torchvision's order):
// out[(y * gw + x) * A + a] = base[a] + (x * sw, y * sh, x * sw, y * sh), shifts computed as
// T(x) * T(stride) like torchvision's arange(...) * stride in the output dtype.
// Floor: writing gh * gw * A * 4 values; the A * 4 base values stay in cache.
#include <algorithm>

#include "common.cuh"
#include "fastdet/ops.h"

namespace fastdet::cuda {
namespace {
using namespace detail;

// Block row y of the grid (strided by gridDim.y); threads over the gw * A * 4 values of a row,
// so each warp store is coalesced and no 64-bit division is needed.
template <typename T>
__global__ void grid_anchors_kernel(const T* __restrict__ base, int A, int64_t gh, int row, T sh,
                                    T sw, T* __restrict__ out) {
  for (int64_t y = blockIdx.y; y < gh; y += gridDim.y) {
    const T dy = T(y) * sh;
    T* o = out + y * row;
    for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < row; e += gridDim.x * blockDim.x) {
      const int comp = e & 3, xa = e >> 2, a = xa % A, x = xa / A;
      const T shift = (comp & 1) ? dy : T(x) * sw;
      o[e] = shift + base[a * 4 + comp];
    }
  }
}

}  // namespace

template <typename T>
void grid_anchors(const T* base, int64_t A, int64_t gh, int64_t gw, double stride_h,
                  double stride_w, T* out, int device, void* stream) {
  if (A <= 0 || gh <= 0 || gw <= 0) return;
  require_int32(gw * A * 4, "grid_anchors: gw * A * 4");
  DeviceGuard guard(device);
  const int row = int(gw * A * 4);
  const dim3 grid(unsigned(std::min<int64_t>(ceil_div(row, kThreads), 1024)),
                  unsigned(std::min<int64_t>(gh, 65535)));
  grid_anchors_kernel<T><<<grid, kThreads, 0, as_stream(stream)>>>(base, int(A), gh, row,
                                                                   T(stride_h), T(stride_w), out);
  FASTDET_CUDA_CHECK_LAUNCH();
}

template void grid_anchors<float>(const float*, int64_t, int64_t, int64_t, double, double, float*,
                                  int, void*);
template void grid_anchors<double>(const double*, int64_t, int64_t, int64_t, double, double,
                                   double*, int, void*);

}  // namespace fastdet::cuda
