// The greedy-NMS pieces nms.cu (boxes [n, 4]) and rotated.cu (rotated boxes [n, 5]) share: the
// boxes put in decreasing score by a stable radix sort of order-preserving keys (the CPU's order:
// -0 == +0, ties lower index first), the size of the mask's chunks, warp 0's greedy pass over a
// 64-row block, and the one synchronisation that reads the result.
#pragma once
#include <algorithm>
#include <cub/device/device_radix_sort.cuh>
#include <type_traits>

#include "common.cuh"
#include "fastdet/ops.h"

namespace fastdet::cuda::detail {

using Word = unsigned long long;  // one mask word: 64 columns
constexpr int kTile = 64;         // boxes per row / column block
constexpr int kMaskStrides = 32;  // blocks per row block in the mask grid (they stride)

template <typename T> using Key = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;

// Mask row blocks per chunk: all of them if the mask fits 64 MiB, else >= 64 (4096 rows).
inline int64_t chunk_row_blocks(int64_t nb) {
  return std::min<int64_t>(nb, std::max<int64_t>(64, (int64_t(1) << 17) / nb));
}

template <typename T> size_t score_sort_temp(int n) {
  size_t b = 0;
  FASTDET_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
      nullptr, b, static_cast<const Key<T>*>(nullptr), static_cast<Key<T>*>(nullptr),
      static_cast<const int*>(nullptr), static_cast<int*>(nullptr), n));
  return b;
}

// Workspace bytes for n boxes: the larger of the float and double layouts, as the *_bytes
// functions do not know T. measure(tag) is the bytes of one layout, tag a null T*.
template <typename F> size_t max_workspace_bytes(int64_t n, const char* what, F measure) {
  if (n <= 0) return 0;
  require_int32(n, what);
  return std::max(measure(static_cast<float*>(nullptr)), measure(static_cast<double*>(nullptr)));
}

// The workspace's first pieces: the header, the score keys and the score order.
template <typename T> struct ScoreOrder {
  NmsHeader* hdr;
  Key<T>* key_in;
  Key<T>* key_out;
  int* iota;
  int* order;  // sorted position -> original index (score order)

  void carve(Carver& c, int64_t n) {
    hdr = c.take<NmsHeader>(1);
    key_in = c.take<Key<T>>(n);
    key_out = c.take<Key<T>>(n);
    iota = c.take<int>(n);
    order = c.take<int>(n);
  }
};

// Ascending unsigned order of the key == descending score order; -0.0 and +0.0 tie.
template <typename T> __device__ __forceinline__ Key<T> desc_key(T v) {
  if (v == T(0)) v = T(0);
  Key<T> u;
  if constexpr (sizeof(T) == 4)
    u = __float_as_uint(v);
  else
    u = static_cast<uint64_t>(__double_as_longlong(v));
  const Key<T> sign = Key<T>(1) << (8 * sizeof(T) - 1);
  u = (u & sign) ? ~u : (u | sign);
  return static_cast<Key<T>>(~u);
}

// Sort keys and values of n boxes of D coordinates; flags a non-finite score or coordinate.
template <int D, typename T>
__global__ void prepare_kernel(const T* __restrict__ boxes, const T* __restrict__ scores, int n,
                               Key<T>* __restrict__ key, int* __restrict__ iota,
                               NmsHeader* __restrict__ hdr) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const T s = scores[i];
    bool finite = isfinite(s);
#pragma unroll
    for (int c = 0; c < D; ++c) finite &= bool(isfinite(boxes[int64_t(i) * D + c]));
    if (!finite) hdr->nonfinite = 1;  // benign race: every writer stores 1
    key[i] = desc_key(s);
    iota[i] = i;
  }
}

// Zeroes the header and puts the n boxes (D coordinates each) in score order: o.order.
template <int D, typename T>
void sort_by_score(const ScoreOrder<T>& o, const T* boxes, const T* scores, int n, void* temp,
                   size_t temp_bytes, cudaStream_t s) {
  FASTDET_CUDA_CHECK(cudaMemsetAsync(o.hdr, 0, sizeof(NmsHeader), s));
  prepare_kernel<D, T><<<grid_1d(n), kThreads, 0, s>>>(boxes, scores, n, o.key_in, o.iota, o.hdr);
  FASTDET_CUDA_CHECK_LAUNCH();
  FASTDET_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, o.key_in, o.key_out, o.iota,
                                                     o.order, n, 0, int(8 * sizeof(Key<T>)), s));
}

// Warp 0: greedy pass over the 64 rows of one block. w: the block's removed word (complete);
// lo/hi: diagonal words of rows lane and lane + 32. Every lane computes the same result.
__device__ __forceinline__ Word resolve_block(Word w, Word lo, Word hi, int nrows) {
  if (nrows < kTile) w |= ~Word(0) << nrows;  // rows past n are never kept
  Word kept = 0;
#pragma unroll
  for (int t = 0; t < kTile; ++t) {
    const Word d = __shfl_sync(0xffffffffu, t < 32 ? lo : hi, t & 31);
    if (!((w >> t) & 1)) {
      kept |= Word(1) << t;
      w |= d;
    }
  }
  return kept;
}

// The kept count, or kNonFinite: the call's one device-to-host copy and synchronisation.
inline int64_t read_result(const NmsHeader* hdr, cudaStream_t s) {
  NmsHeader h{};
  FASTDET_CUDA_CHECK(cudaMemcpyAsync(&h, hdr, sizeof h, cudaMemcpyDeviceToHost, s));
  FASTDET_CUDA_CHECK(cudaStreamSynchronize(s));
  return h.nonfinite ? int64_t(kNonFinite) : int64_t(h.count);
}

}  // namespace fastdet::cuda::detail
