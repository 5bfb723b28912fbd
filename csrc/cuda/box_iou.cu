// box_area and the pairwise IoU family (IoU, GIoU, DIoU, CIoU): out[i * m + j] for every pair,
// for each of `batch` independent pairs of box sets (grid z, or y on the flat path).
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

// One pair of the KIND family. Per-box terms come precomputed: area and, for CIoU, the aspect
// angle (an atan, the costliest part, once per box instead of once per pair).
template <typename T, int KIND>
__device__ __forceinline__ T pair_value(const T* a, const T* b, T area_a, T area_b, T angle_a,
                                        T angle_b, T eps) {
  if constexpr (KIND == kGiou) return fastdet::giou(a, b);
  const T iou = iou_pair(a, b, area_a, area_b);
  if constexpr (KIND == kIou) return iou;
  const T diou = fastdet::diou_from(a, b, iou, eps);
  if constexpr (KIND == kDiou) return diou;
  return fastdet::ciou_from(diou, iou, angle_a, angle_b, eps);
}

template <typename T, int KIND> __device__ __forceinline__ T angle_of(const T* b) {
  if constexpr (KIND == kCiou)
    return fastdet::aspect_angle(b);
  else
    return T(0);
}

template <typename T, int KIND, bool VEC>
__global__ void __launch_bounds__(kThreads)
    pairwise_kernel(const T* __restrict__ a0, const T* __restrict__ b0, int64_t batch, int64_t n,
                    int64_t m, int rows, T eps, T* __restrict__ out0) {
  constexpr int V = 16 / sizeof(T);
  __shared__ T sa[kRows][4];
  for (int64_t z = blockIdx.z; z < batch; z += gridDim.z) {
    const T* a = a0 + z * n * 4;
    const T* b = b0 + z * m * 4;
    T* out = out0 + z * n * m;
    const int64_t tile = int64_t(blockIdx.x) * blockDim.x * V;
    // This thread's V columns: consecutive (VEC) or blockDim apart; offsets from `first`.
    const int64_t first = VEC ? tile + int64_t(threadIdx.x) * V : tile + threadIdx.x;
    const int step = VEC ? 1 : blockDim.x;
    T bb[V][4], barea[V], bangle[V];
    bool ok[V];
#pragma unroll
    for (int v = 0; v < V; ++v) {
      const int64_t j = first + int64_t(v) * step;
      ok[v] = j < m;
#pragma unroll
      for (int c = 0; c < 4; ++c) bb[v][c] = ok[v] ? b[j * 4 + c] : T(0);
      barea[v] = fastdet::box_area(bb[v]);
      bangle[v] = angle_of<T, KIND>(bb[v]);
    }
    for (int64_t i0 = int64_t(blockIdx.y) * rows; i0 < n; i0 += int64_t(gridDim.y) * rows) {
      const int nr = int(min(int64_t(rows), n - i0));
      __syncthreads();  // the previous rows' reads of sa are done
      for (int e = threadIdx.x; e < nr * 4; e += blockDim.x) sa[e >> 2][e & 3] = a[i0 * 4 + e];
      __syncthreads();
      T* o = out + i0 * m + first;
      for (int r = 0; r < nr; ++r, o += m) {
        const T ab[4] = {sa[r][0], sa[r][1], sa[r][2], sa[r][3]};
        const T aarea = fastdet::box_area(ab), aangle = angle_of<T, KIND>(ab);
        T val[V];
#pragma unroll
        for (int v = 0; v < V; ++v)
          val[v] = pair_value<T, KIND>(ab, bb[v], aarea, barea[v], aangle, bangle[v], eps);
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
}

template <typename T> __device__ __forceinline__ void load_box(const T* p, int64_t i, T (&bx)[4]) {
#pragma unroll
  for (int c = 0; c < 4; ++c) bx[c] = p[i * 4 + c];
}

// Flat path: block row groups of `rows` rows (a multiple of 4, so every group starts V-aligned
// in the flat output); chunk f of a group covers its elements [f, f + V), which may span rows.
template <typename T, int KIND>
__global__ void __launch_bounds__(kThreads)
    pairwise_flat_kernel(const T* __restrict__ a0, const T* __restrict__ b0, int64_t batch,
                         int64_t n, int m, int rows, T eps, T* __restrict__ out0) {
  constexpr int V = 16 / sizeof(T);
  __shared__ T sb[kFlatMaxM][4];
  __shared__ T sarea[kFlatMaxM];
  __shared__ T sangle[KIND == kCiou ? kFlatMaxM : 1];
  for (int64_t z = blockIdx.y; z < batch; z += gridDim.y) {
    const T* a = a0 + z * n * 4;
    const T* b = b0 + z * int64_t(m) * 4;
    T* out = out0 + z * n * m;
    __syncthreads();  // the previous batch's reads of sb are done
    for (int j = threadIdx.x; j < m; j += blockDim.x) {
      load_box(b, j, sb[j]);
      sarea[j] = fastdet::box_area(sb[j]);
      if constexpr (KIND == kCiou) sangle[j] = fastdet::aspect_angle(sb[j]);
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
        T aarea = fastdet::box_area(ab), aangle = angle_of<T, KIND>(ab);
        T val[V];
#pragma unroll
        for (int v = 0; v < V; ++v) {
          if (f + v < limit) {
            T bangle = T(0);
            if constexpr (KIND == kCiou) bangle = sangle[j];
            val[v] = pair_value<T, KIND>(ab, sb[j], aarea, sarea[j], aangle, bangle, eps);
          } else {
            val[v] = T(0);
          }
          if (++j == m && v + 1 < V && f + v + 1 < limit) {  // the chunk continues on the next row
            j = 0;
            load_box(a, i0 + ++r, ab);
            aarea = fastdet::box_area(ab);
            aangle = angle_of<T, KIND>(ab);
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
}

template <typename T, int KIND>
void pairwise(const T* a, const T* b, int64_t batch, int64_t n, int64_t m, T eps, T* out,
              int device, void* stream) {
  if (batch <= 0 || n <= 0 || m <= 0) return;
  DeviceGuard guard(device);
  constexpr int V = 16 / sizeof(T);
  // Every batch's output starts 16-byte aligned only when n * m keeps it so.
  const bool aligned = reinterpret_cast<uintptr_t>(out) % 16 == 0 && (batch == 1 || n * m % V == 0);
  const unsigned gz = unsigned(std::min<int64_t>(batch, 65535));
  cudaStream_t s = as_stream(stream);
  if (aligned && m <= kFlatMaxM) {
    const int rows = int(ceil_div(ceil_div(kFlatChunk, m), 4) * 4);
    const unsigned gx = unsigned(std::min<int64_t>(ceil_div(n, rows), int64_t(1) << 20));
    pairwise_flat_kernel<T, KIND>
        <<<dim3(gx, gz), kThreads, 0, s>>>(a, b, batch, n, int(m), rows, eps, out);
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
      int(std::clamp<int64_t>(ceil_div(n * gx * batch, target), std::min<int64_t>(n, 8), kRows));
  const dim3 grid(unsigned(gx), unsigned(std::min<int64_t>(ceil_div(n, rows), 65535)), gz);
  if (vec)
    pairwise_kernel<T, KIND, true><<<grid, threads, 0, s>>>(a, b, batch, n, m, rows, eps, out);
  else
    pairwise_kernel<T, KIND, false><<<grid, threads, 0, s>>>(a, b, batch, n, m, rows, eps, out);
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
  pairwise<T, kIou>(a, b, 1, n, m, T(0), out, device, stream);
}

template <typename T>
void generalized_box_iou(const T* a, int64_t n, const T* b, int64_t m, T* out, int device,
                         void* stream) {
  pairwise<T, kGiou>(a, b, 1, n, m, T(0), out, device, stream);
}

template <typename T>
void pairwise_iou(IouKind kind, const T* a, const T* b, int64_t batch, int64_t n, int64_t m,
                  double eps, T* out, int device, void* stream) {
  const T e = T(eps);
  switch (kind) {
    case kIou:
      return pairwise<T, kIou>(a, b, batch, n, m, e, out, device, stream);
    case kGiou:
      return pairwise<T, kGiou>(a, b, batch, n, m, e, out, device, stream);
    case kDiou:
      return pairwise<T, kDiou>(a, b, batch, n, m, e, out, device, stream);
    case kCiou:
      return pairwise<T, kCiou>(a, b, batch, n, m, e, out, device, stream);
  }
}

#define FASTDET_INSTANTIATE(T)                                                                  \
  template void box_area<T>(const T*, int64_t, T*, int, void*);                                 \
  template void box_iou<T>(const T*, int64_t, const T*, int64_t, T*, int, void*);               \
  template void generalized_box_iou<T>(const T*, int64_t, const T*, int64_t, T*, int, void*);   \
  template void pairwise_iou<T>(IouKind, const T*, const T*, int64_t, int64_t, int64_t, double, \
                                T*, int, void*);
FASTDET_INSTANTIATE(float)
FASTDET_INSTANTIATE(double)

}  // namespace fastdet::cuda
