// paste_masks and masks_to_labels on the GPU, with the rules and arithmetic of
// csrc/cpu/paste_masks.cpp (fastdet/paste.h; -fmad=false, so the same bits as the CPU).
//
// paste_masks: the output is zeroed with one memset, then a (mask, band of 32 rows) grid of
// 32 x 8 blocks computes only the footprint pixels, one thread per pixel (a warp along a row;
// no index division). Blocks whose band misses the footprint return at once.
//
// masks_to_labels: the label image first holds, per pixel, the smallest position i in `order`
// of a mask claiming it (atomicMin: the result does not depend on scheduling), then a second
// pass turns positions into labels order[i] + 1 (0 where none claimed). A thread skips the
// bilinear value when a better-placed mask already holds its pixel. Full-size masks: one thread
// per pixel walks `order` until a mask claims it (coalesced: neighbouring threads read
// neighbouring pixels of one mask).
#include <type_traits>

#include "common.cuh"
#include "fastdet/ops.h"
#include "fastdet/paste.h"

namespace fastdet::cuda {
namespace {
using namespace detail;

constexpr int kBandRows = 32;
// Footprint blocks: a warp along a row (coalesced writes), 8 rows at a time.
const dim3 kBlock(32, 8);
constexpr int32_t kUnclaimed = 0x7F7F7F7F;  // a cudaMemset of 0x7F bytes

// Pixel (i, j) of mask m (M x M) padded by p zeros.
template <typename T>
__device__ __forceinline__ T padded(const T* __restrict__ m, int64_t M, int64_t p, int64_t i,
                                    int64_t j) {
  const int64_t r = i - p, c = j - p;
  return (r >= 0 && r < M && c >= 0 && c < M) ? m[r * M + c] : T(0);
}

// The bilinear value at image pixel (y, x) of footprint f, in the CPU kernel's order.
template <typename T>
__device__ __forceinline__ T paste_value(const T* __restrict__ m, int64_t M, int64_t p,
                                         const Footprint& f, int64_t y, int64_t x) {
  const int64_t Mp = M + 2 * p;
  const Tap2<T> ty = resize_tap<T>(y - f.y0, Mp, f.h), tx = resize_tap<T>(x - f.x0, Mp, f.w);
  const T t0 = padded(m, M, p, ty.i0, tx.i0) * tx.l0 + padded(m, M, p, ty.i0, tx.i1) * tx.l1;
  const T t1 = padded(m, M, p, ty.i1, tx.i0) * tx.l0 + padded(m, M, p, ty.i1, tx.i1) * tx.l1;
  return t0 * ty.l0 + t1 * ty.l1;
}

// Rows per band: kBandRows, or more where H would need over 65535 bands (gridDim.y's limit).
inline int64_t band_rows(int64_t H) {
  const int64_t r = ceil_div(H, 65535);
  return r > kBandRows ? r : kBandRows;
}

// Visits the pixels (y, x) of mask k's footprint in band blockIdx.y (rows per band), the block's
// threads striding; value() is the pasted probability there, computed only when asked.
template <typename T, typename B, typename F>
__device__ __forceinline__ void for_band_pixels(const T* __restrict__ masks, int64_t M,
                                                const B* __restrict__ boxes, int64_t k, int64_t p,
                                                int64_t H, int64_t W, double scale, int64_t rows,
                                                F visit) {
  const Footprint f = paste_footprint(boxes + 4 * k, scale, H, W);
  const int64_t b0 = int64_t(blockIdx.y) * rows;
  const int64_t r0 = f.r0 > b0 ? f.r0 : b0, r1 = f.r1 < b0 + rows ? f.r1 : b0 + rows;
  if (f.empty() || r1 <= r0) return;
  const T* m = masks + k * M * M;
  for (int64_t y = r0 + threadIdx.y; y < r1; y += blockDim.y)
    for (int64_t x = f.c0 + threadIdx.x; x < f.c1; x += blockDim.x)
      visit(y, x, [&] { return paste_value(m, M, p, f, y, x); });
}

template <typename T, typename B, typename O>
__global__ void paste_kernel(const T* __restrict__ masks, int64_t M, const B* __restrict__ boxes,
                             int64_t p, int64_t H, int64_t W, double scale, int64_t rows, T thr,
                             O* __restrict__ out) {
  const int64_t k = blockIdx.x;
  O* plane = out + k * H * W;
  for_band_pixels(masks, M, boxes, k, p, H, W, scale, rows, [&](int64_t y, int64_t x, auto value) {
    const T v = value();
    if constexpr (std::is_same_v<O, T>)
      plane[y * W + x] = v;
    else
      plane[y * W + x] = v > thr;
  });
}

template <typename T, typename B>
__global__ void claim_kernel(const T* __restrict__ masks, int64_t M, const B* __restrict__ boxes,
                             const int64_t* __restrict__ order, int64_t p, int64_t H, int64_t W,
                             double scale, int64_t rows, T thr, int32_t* __restrict__ claim) {
  const int32_t i = int32_t(blockIdx.x);
  for_band_pixels(masks, M, boxes, order[i], p, H, W, scale, rows,
                  [&](int64_t y, int64_t x, auto value) {
                    int32_t* c = claim + y * W + x;
                    if (*c < i) return;  // a mask earlier in order holds it already
                    if (value() > thr) atomicMin(c, i);
                  });
}

__global__ void label_kernel(const int64_t* __restrict__ order, int64_t count,
                             int32_t* __restrict__ out) {
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < count;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int32_t v = out[e];
    out[e] = v == kUnclaimed ? 0 : int32_t(order[v] + 1);
  }
}

template <typename T>
__global__ void full_labels_kernel(const T* __restrict__ masks, int64_t K,
                                   const int64_t* __restrict__ order, int64_t count, T thr,
                                   int32_t* __restrict__ out) {
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < count;
       e += int64_t(gridDim.x) * blockDim.x) {
    int32_t label = 0;
    for (int64_t i = 0; i < K; ++i) {
      const int64_t k = order[i];
      if (masks[k * count + e] > thr) {
        label = int32_t(k + 1);
        break;
      }
    }
    out[e] = label;
  }
}

template <typename T, typename B, typename O>
void paste_launch(const T* masks, int64_t K, int64_t M, const B* boxes, int64_t padding, int64_t H,
                  int64_t W, double threshold, O* out, int device, void* stream) {
  if (K <= 0 || H <= 0 || W <= 0) return;
  require_int32(K, "the number of masks");
  DeviceGuard guard(device);
  cudaStream_t s = as_stream(stream);
  FASTDET_CUDA_CHECK(cudaMemsetAsync(out, 0, size_t(K * H * W) * sizeof(O), s));
  const int64_t rows = band_rows(H), Mp = M + 2 * padding;
  const dim3 grid(unsigned(K), unsigned(ceil_div(H, rows)));
  paste_kernel<T, B, O><<<grid, kBlock, 0, s>>>(masks, M, boxes, padding, H, W,
                                                double(Mp) / double(M), rows, T(threshold), out);
  FASTDET_CUDA_CHECK_LAUNCH();
}

}  // namespace

template <typename T, typename B>
void paste_masks(const T* masks, int64_t K, int64_t M, const B* boxes, int64_t padding, int64_t H,
                 int64_t W, T* out, int device, void* stream) {
  paste_launch(masks, K, M, boxes, padding, H, W, 0.0, out, device, stream);
}

template <typename T, typename B>
void paste_masks_binary(const T* masks, int64_t K, int64_t M, const B* boxes, int64_t padding,
                        int64_t H, int64_t W, double threshold, uint8_t* out, int device,
                        void* stream) {
  paste_launch(masks, K, M, boxes, padding, H, W, threshold, out, device, stream);
}

template <typename T, typename B>
void masks_to_labels(const T* masks, int64_t K, int64_t M, const B* boxes, const int64_t* order,
                     int64_t padding, int64_t H, int64_t W, double threshold, int32_t* out,
                     int device, void* stream) {
  if (H <= 0 || W <= 0) return;
  if (K >= kUnclaimed) throw std::invalid_argument("fastdet CUDA masks_to_labels: too many masks");
  DeviceGuard guard(device);
  cudaStream_t s = as_stream(stream);
  const int64_t count = H * W;
  if (!boxes || K <= 0) {
    full_labels_kernel<T>
        <<<grid_1d(count), kThreads, 0, s>>>(masks, boxes ? 0 : K, order, count, T(threshold), out);
    FASTDET_CUDA_CHECK_LAUNCH();
    return;
  }
  FASTDET_CUDA_CHECK(cudaMemsetAsync(out, 0x7F, size_t(count) * sizeof(int32_t), s));
  const int64_t rows = band_rows(H), Mp = M + 2 * padding;
  const dim3 grid(unsigned(K), unsigned(ceil_div(H, rows)));
  claim_kernel<T, B><<<grid, kBlock, 0, s>>>(masks, M, boxes, order, padding, H, W,
                                             double(Mp) / double(M), rows, T(threshold), out);
  FASTDET_CUDA_CHECK_LAUNCH();
  label_kernel<<<grid_1d(count), kThreads, 0, s>>>(order, count, out);
  FASTDET_CUDA_CHECK_LAUNCH();
}

#define FASTDET_INSTANTIATE(T, B)                                                                  \
  template void paste_masks<T, B>(const T*, int64_t, int64_t, const B*, int64_t, int64_t, int64_t, \
                                  T*, int, void*);                                                 \
  template void paste_masks_binary<T, B>(const T*, int64_t, int64_t, const B*, int64_t, int64_t,   \
                                         int64_t, double, uint8_t*, int, void*);                   \
  template void masks_to_labels<T, B>(const T*, int64_t, int64_t, const B*, const int64_t*,        \
                                      int64_t, int64_t, int64_t, double, int32_t*, int, void*);
FASTDET_INSTANTIATE(float, float)
FASTDET_INSTANTIATE(float, double)
FASTDET_INSTANTIATE(double, float)
FASTDET_INSTANTIATE(double, double)

}  // namespace fastdet::cuda
