// box_area, box_iou, generalized_box_iou: out[i * m + j] for every pair.
// Floor: writing the n*m output (n*m*sizeof(T) bytes); a and b are O(n+m) and read ~once per
// block. Each thread keeps V = 16/sizeof(T) boxes of b (and their areas) in registers and walks
// up to kRows rows of a staged in shared memory, so per output it reads nothing from memory.
// When m % V == 0 (and out is 16-byte aligned) a thread owns V consecutive columns and writes
// them with one float4 / double2 store; otherwise its V columns are blockDim apart so the scalar
// stores of a warp are still coalesced. Narrow outputs (m <= kFlatMaxM, e.g. anchors x a few
// ground-truth boxes) would leave most lanes idle that way: there b is staged in shared memory
// and threads walk the flat output in aligned V-element chunks instead, whatever m is.
#include <algorithm>

#include "common.cuh"
#include "fastdet/box.h"
#include "fastdet/ops.h"

namespace fastdet::cuda {
namespace {
using namespace detail;

constexpr int kRows = 64;         // rows of a per block at most (register path)
constexpr int kFlatMaxM = 256;    // widest b staged whole in shared memory (flat path)
constexpr int kFlatChunk = 4096;  // output elements per row group (flat path)

template <typename T, int V> __device__ __forceinline__ void store_vec(T* p, const T (&v)[V]) {
  if constexpr (sizeof(T) == 4)
    *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
  else
    *reinterpret_cast<double2*>(p) = make_double2(v[0], v[1]);
}

// IoU with box.h's expression; disjoint boxes (the common case) skip the division, whose
// slow path a zero numerator would take. Bit-identical: iou_from(0, ...) is +0 as well.
template <typename T>
__device__ __forceinline__ T iou_pair(const T* a, const T* b, T area_a, T area_b) {
  const T inter = fastdet::intersection(a, b);
  return inter > T(0) ? fastdet::iou_from(inter, area_a, area_b) : T(0);
}

template <typename T, bool GIOU, bool VEC>
__global__ void __launch_bounds__(kThreads)
    pairwise_kernel(const T* __restrict__ a, int64_t n, const T* __restrict__ b, int64_t m,
                    int rows, T* __restrict__ out) {
  constexpr int V = 16 / sizeof(T);
  __shared__ T sa[kRows][4];
  const int64_t tile = int64_t(blockIdx.x) * blockDim.x * V;
  // This thread's V columns: consecutive (VEC) or blockDim apart; offsets from `first`.
  const int64_t first = VEC ? tile + int64_t(threadIdx.x) * V : tile + threadIdx.x;
  const int step = VEC ? 1 : blockDim.x;
  T bb[V][4], barea[V];
  bool ok[V];
#pragma unroll
  for (int v = 0; v < V; ++v) {
    const int64_t j = first + int64_t(v) * step;
    ok[v] = j < m;
#pragma unroll
    for (int c = 0; c < 4; ++c) bb[v][c] = ok[v] ? b[j * 4 + c] : T(0);
    barea[v] = fastdet::box_area(bb[v]);
  }
  for (int64_t i0 = int64_t(blockIdx.y) * rows; i0 < n; i0 += int64_t(gridDim.y) * rows) {
    const int nr = int(min(int64_t(rows), n - i0));
    __syncthreads();  // the previous rows' reads of sa are done
    for (int e = threadIdx.x; e < nr * 4; e += blockDim.x) sa[e >> 2][e & 3] = a[i0 * 4 + e];
    __syncthreads();
    T* o = out + i0 * m + first;
    for (int r = 0; r < nr; ++r, o += m) {
      const T ab[4] = {sa[r][0], sa[r][1], sa[r][2], sa[r][3]};
      const T aarea = fastdet::box_area(ab);
      T val[V];
#pragma unroll
      for (int v = 0; v < V; ++v)
        val[v] = GIOU ? fastdet::giou(ab, bb[v]) : iou_pair(ab, bb[v], aarea, barea[v]);
      if (VEC) {
        if (ok[0]) store_vec<T, V>(o, val);  // m % V == 0: all V columns in, or none
      } else {
#pragma unroll
        for (int v = 0; v < V; ++v)
          if (ok[v]) o[v * step] = val[v];
      }
    }
  }
}

template <typename T> __device__ __forceinline__ void load_box(const T* p, int64_t i, T (&bx)[4]) {
#pragma unroll
  for (int c = 0; c < 4; ++c) bx[c] = p[i * 4 + c];
}

// Flat path: block row groups of `rows` rows (a multiple of 4, so every group starts V-aligned
// in the flat output); chunk f of a group covers its elements [f, f + V), which may span rows.
template <typename T, bool GIOU>
__global__ void __launch_bounds__(kThreads)
    pairwise_flat_kernel(const T* __restrict__ a, int64_t n, const T* __restrict__ b, int m,
                         int rows, T* __restrict__ out) {
  constexpr int V = 16 / sizeof(T);
  __shared__ T sb[kFlatMaxM][4];
  __shared__ T sarea[kFlatMaxM];
  for (int j = threadIdx.x; j < m; j += blockDim.x) {
    load_box(b, j, sb[j]);
    sarea[j] = fastdet::box_area(sb[j]);
  }
  __syncthreads();
  const int group = rows * m;  // < 2^24: the float reciprocal below is off by <= 1
  const float inv_m = 1.0f / float(m);
  for (int64_t i0 = int64_t(blockIdx.x) * rows; i0 < n; i0 += int64_t(gridDim.x) * rows) {
    const int64_t limit = (n - i0) * m;  // elements of this group inside the output
    T* o = out + i0 * m;
    for (int f = threadIdx.x * V; f < group && f < limit; f += blockDim.x * V) {
      int r = int(float(f) * inv_m), j = f - r * m;
      if (j < 0) {
        --r;
        j += m;
      } else if (j >= m) {
        ++r;
        j -= m;
      }
      T ab[4];
      load_box(a, i0 + r, ab);
      T aarea = fastdet::box_area(ab);
      T val[V];
#pragma unroll
      for (int v = 0; v < V; ++v) {
        if (f + v < limit)
          val[v] = GIOU ? fastdet::giou(ab, sb[j]) : iou_pair(ab, sb[j], aarea, sarea[j]);
        else
          val[v] = T(0);
        if (++j == m && v + 1 < V && f + v + 1 < limit) {  // the chunk continues on the next row
          j = 0;
          load_box(a, i0 + ++r, ab);
          aarea = fastdet::box_area(ab);
        }
      }
      if (f + V <= limit) {
        store_vec<T, V>(o + f, val);
      } else {
#pragma unroll
        for (int v = 0; v < V; ++v)
          if (f + v < limit) o[f + v] = val[v];
      }
    }
  }
}

template <typename T, bool GIOU>
void pairwise(const T* a, int64_t n, const T* b, int64_t m, T* out, int device, void* stream) {
  if (n <= 0 || m <= 0) return;
  DeviceGuard guard(device);
  constexpr int V = 16 / sizeof(T);
  const bool aligned = reinterpret_cast<uintptr_t>(out) % 16 == 0;
  cudaStream_t s = as_stream(stream);
  if (aligned && m <= kFlatMaxM) {
    const int rows = int(ceil_div(ceil_div(kFlatChunk, m), 4) * 4);
    const unsigned grid = unsigned(std::min<int64_t>(ceil_div(n, rows), int64_t(1) << 20));
    pairwise_flat_kernel<T, GIOU><<<grid, kThreads, 0, s>>>(a, n, b, int(m), rows, out);
    FASTDET_CUDA_CHECK_LAUNCH();
    return;
  }
  const bool vec = aligned && m % V == 0;
  // Narrow b: a block no wider than the columns it has.
  const int threads = int(std::min<int64_t>(kThreads, ceil_div(ceil_div(m, V), kWarp) * kWarp));
  const int64_t gx = ceil_div(m, int64_t(threads) * V);
  if (gx > INT_MAX) throw std::invalid_argument("fastdet CUDA box_iou: m too large");
  // Rows per block: enough blocks to fill the GPU, but >= 8 rows where n allows so the b tile
  // loaded into registers is reused.
  const int64_t target = int64_t(sm_count(device)) * 8;
  const int rows =
      int(std::clamp<int64_t>(ceil_div(n * gx, target), std::min<int64_t>(n, 8), kRows));
  const dim3 grid(unsigned(gx), unsigned(std::min<int64_t>(ceil_div(n, rows), 65535)));
  if (vec)
    pairwise_kernel<T, GIOU, true><<<grid, threads, 0, s>>>(a, n, b, m, rows, out);
  else
    pairwise_kernel<T, GIOU, false><<<grid, threads, 0, s>>>(a, n, b, m, rows, out);
  FASTDET_CUDA_CHECK_LAUNCH();
}

template <typename T>
__global__ void box_area_kernel(const T* __restrict__ boxes, int64_t n, T* __restrict__ out) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    out[i] = fastdet::box_area(boxes + 4 * i);
}

}  // namespace

template <typename T> void box_area(const T* boxes, int64_t n, T* out, int device, void* stream) {
  if (n <= 0) return;
  DeviceGuard guard(device);
  box_area_kernel<T><<<grid_1d(n), kThreads, 0, as_stream(stream)>>>(boxes, n, out);
  FASTDET_CUDA_CHECK_LAUNCH();
}

template <typename T>
void box_iou(const T* a, int64_t n, const T* b, int64_t m, T* out, int device, void* stream) {
  pairwise<T, false>(a, n, b, m, out, device, stream);
}

template <typename T>
void generalized_box_iou(const T* a, int64_t n, const T* b, int64_t m, T* out, int device,
                         void* stream) {
  pairwise<T, true>(a, n, b, m, out, device, stream);
}

#define FASTDET_INSTANTIATE(T)                                                    \
  template void box_area<T>(const T*, int64_t, T*, int, void*);                   \
  template void box_iou<T>(const T*, int64_t, const T*, int64_t, T*, int, void*); \
  template void generalized_box_iou<T>(const T*, int64_t, const T*, int64_t, T*, int, void*);
FASTDET_INSTANTIATE(float)
FASTDET_INSTANTIATE(double)

}  // namespace fastdet::cuda
