// nms and batched_nms: greedy NMS, torchvision's rule (box j is dropped when some kept box
// earlier in decreasing-score order has IoU > iou_threshold), entirely on the GPU.
//
// Pipeline: order-preserving score keys (the CPU's keys: -0 == +0) -> stable cub radix sort
// (ties: lower index first) -> boxes gathered in that order -> 64x64 suppression tiles, one
// uint64 word per (row, column block), upper triangle only, for CHUNKS of rows so the mask
// memory is bounded -> per chunk, one block walks the row blocks in order with the chunk's
// words of the 'removed' bitset in shared memory (the greedy pass), then a GPU-wide kernel ORs
// the chunk's kept rows into the words of later chunks (global workspace) -> kept indices.
// batched_nms adds a second stable sort by class, so rows run in (class, score) order, only
// computes tiles whose blocks can share a class, and compacts kept flags in score order.
// The host reads count + non-finite flag in one 16-byte copy and synchronises once.
// suppress_contained is batched_nms with another rule for a mask bit: the later (lower-scoring)
// box has more than `fraction` of its area inside the earlier one (inter / area_later).
//
// Floors: the sort (a few radix passes over n keys and values); ~n^2/2 IoUs for the mask (only
// same-class tile runs in batched mode); kept_rows * ceil(n/64) / 2 mask words read to OR
// (within a chunk by one block, serially per 64 rows; beyond it by the whole GPU).
//
// Workspace, every piece rounded up to 256 bytes, plus 256 for an unaligned base:
//   nb = ceil(n / 64)                                 column words per mask row
//   R  = 64 * min(nb, max(64, 2^17 / nb))             mask rows per chunk: all rows if the
//                                                     mask fits 64 MiB, else >= 4096 rows
//   nms:  header 16 | score keys in, out 2 * n * 8 | iota, order 2 * n * 4 | cub sort temp
//         | sorted boxes n * 32 | mask chunk R * nb * 8 | removed bits nb * 8
//         | kept rows of a chunk R * 4 | their count 4
//   batched adds: class keys in, out 2 * n * 8 | class-order ranks n * 4 | col_end nb * 4
//         | kept flags n ; cub temp = max(score sort, class sort, select-flagged)
// Sizes assume 8-byte keys and double boxes (the *_bytes functions do not know T) and the cub
// temp size reported for the current device.
#include <algorithm>
#include <cmath>
#include <cub/device/device_select.cuh>
#include <type_traits>

#include "fastdet/box.h"
#include "nms.cuh"

namespace fastdet::cuda {
namespace {
using namespace detail;

constexpr int kReduceThreads = 512;  // warp 0 resolves rows, the rest OR mask rows

// ---------------------------------------------------------------------------- workspace

template <typename T> struct Buffers : ScoreOrder<T> {
  Word* ckey_in;   // batched: class keys in score order
  Word* ckey_out;  // batched: class keys in (class, score) order
  int* rank;       // batched: (class, score) position -> score position
  int* col_end;    // batched: last column block that can share a class with the row block
  uint8_t* flags;  // batched: kept flag per score position
  void* temp;
  size_t temp_bytes;
  Box4<T>* sorted;  // boxes in processing order
  Word* mask;
  Word* removed;
  int* kept_rows;  // chunk-local rows kept by the chunk's greedy pass
  int* kept_count;
};

size_t class_sort_temp(int n) {
  size_t b = 0;
  FASTDET_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
      nullptr, b, static_cast<const Word*>(nullptr), static_cast<Word*>(nullptr),
      static_cast<const int*>(nullptr), static_cast<int*>(nullptr), n));
  return b;
}

size_t select_temp(int n) {
  size_t b = 0;
  FASTDET_CUDA_CHECK(cub::DeviceSelect::Flagged(
      nullptr, b, static_cast<const int*>(nullptr), static_cast<const uint8_t*>(nullptr),
      static_cast<int64_t*>(nullptr), static_cast<long long*>(nullptr), n));
  return b;
}

// Carves (or, with base == nullptr, measures) the workspace; returns the bytes it needs.
template <typename T> size_t layout(void* base, int64_t n, bool batched, Buffers<T>* b) {
  Carver c(base);
  const int64_t nb = ceil_div(n, kTile);
  const int ni = int(n);
  b->carve(c, n);
  size_t temp = score_sort_temp<T>(ni);
  b->ckey_in = b->ckey_out = nullptr;
  b->rank = b->col_end = nullptr;
  b->flags = nullptr;
  if (batched) {
    b->ckey_in = c.take<Word>(n);
    b->ckey_out = c.take<Word>(n);
    b->rank = c.take<int>(n);
    b->col_end = c.take<int>(nb);
    b->flags = c.take<uint8_t>(n);
    temp = std::max({temp, class_sort_temp(ni), select_temp(ni)});
  }
  b->temp = c.take_bytes(temp);
  b->temp_bytes = temp;
  b->sorted = c.take<Box4<T>>(n);
  const int64_t rows = chunk_row_blocks(nb) * kTile;
  b->mask = c.take<Word>(rows * nb);
  b->removed = c.take<Word>(nb);
  b->kept_rows = c.take<int>(rows);
  b->kept_count = c.take<int>(1);
  return base ? c.used() : c.bytes();
}

size_t workspace_bytes(int64_t n, bool batched) {
  return max_workspace_bytes(n, "nms: n", [&](auto tag) {
    Buffers<std::remove_pointer_t<decltype(tag)>> b;
    return layout(nullptr, n, batched, &b);
  });
}

// The T threshold t_T with (iou > t_T) == (double(iou) > t) for every T iou, as the CPU
// compares: the largest T not above t.
template <typename T> T threshold_as(double t) {
  if constexpr (sizeof(T) == 8) {
    return t;
  } else {
    float f = float(t);
    if (double(f) > t) f = std::nextafter(f, -INFINITY);
    return f;
  }
}

// ---------------------------------------------------------------------------- small kernels

// Class keys in score order; flipping the sign bit makes unsigned order == signed order.
__global__ void class_key_kernel(const int64_t* __restrict__ idxs, const int* __restrict__ order,
                                 int n, Word* __restrict__ ckey) {
  for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n; p += gridDim.x * blockDim.x)
    ckey[p] = static_cast<Word>(idxs[order[p]]) ^ (Word(1) << 63);
}

// sorted[p] = boxes[order[p]] (nms) or boxes[order[rank[p]]] (batched: class order).
template <typename T>
__global__ void gather_kernel(const T* __restrict__ boxes, const int* __restrict__ order,
                              const int* __restrict__ rank, int n, Box4<T>* __restrict__ sorted) {
  for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n; p += gridDim.x * blockDim.x) {
    const int64_t src = order[rank ? rank[p] : p];
    Box4<T> b;
#pragma unroll
    for (int c = 0; c < 4; ++c) b.v[c] = boxes[src * 4 + c];
    sorted[p] = b;
  }
}

// col_end[rb]: block of the last row whose class is <= the class of row block rb's last row.
// Rows are sorted by class, so later column blocks share no class with rb.
__global__ void col_end_kernel(const Word* __restrict__ ckey, int n, int nb,
                               int* __restrict__ col_end) {
  for (int rb = blockIdx.x * blockDim.x + threadIdx.x; rb < nb; rb += gridDim.x * blockDim.x) {
    const int last = min(n, (rb + 1) * kTile) - 1;
    const Word k = ckey[last];
    int lo = last + 1, hi = n;  // upper bound of k in [last + 1, n)
    while (lo < hi) {
      const int mid = lo + (hi - lo) / 2;
      if (ckey[mid] <= k)
        lo = mid + 1;
      else
        hi = mid;
    }
    col_end[rb] = (lo - 1) / kTile;
  }
}

// ---------------------------------------------------------------------------- mask

// Block (x, y): row block rb = rb0 + y, column blocks rb + x, rb + x + gridDim.x, ... up to
// col_end. Thread t owns row rb*64 + t and writes one word per column block: bit c set when
// column box c comes later, has the same class (batched) and IoU > thr (CONTAIN: c's covered
// fraction of its area > thr).
template <typename T, bool CLASSES, bool CONTAIN>
__global__ void __launch_bounds__(kTile)
    mask_kernel(const Box4<T>* __restrict__ boxes, const Word* __restrict__ ckey,
                const int* __restrict__ col_end, int n, int nb, int rb0, T thr,
                Word* __restrict__ mask) {
  __shared__ Box4<T> sbox[kTile];
  __shared__ T sarea[kTile];
  __shared__ Word skey[CLASSES ? kTile : 1];
  const int rb = rb0 + int(blockIdx.y), tid = threadIdx.x, row = rb * kTile + tid;
  const int cend = CLASSES ? col_end[rb] : nb - 1;
  Box4<T> rbox{};
  T rarea = T(0);
  Word rkey = 0;
  if (row < n) {
    rbox = boxes[row];
    rarea = fastdet::box_area(rbox.v);
    if (CLASSES) rkey = ckey[row];
  }
  Word* out = mask + int64_t(blockIdx.y * kTile + tid) * nb;
  for (int cb = rb + int(blockIdx.x); cb <= cend; cb += gridDim.x) {
    const int col = cb * kTile + tid;
    __syncthreads();  // the previous tile's reads of shared memory are done
    if (col < n) {
      const Box4<T> c = boxes[col];
      sbox[tid] = c;
      sarea[tid] = fastdet::box_area(c.v);
      if (CLASSES) skey[tid] = ckey[col];
    }
    __syncthreads();
    if (row < n) {
      const int ncols = min(kTile, n - cb * kTile);
      Word bits = 0;
      for (int c = cb == rb ? tid + 1 : 0; c < ncols; ++c) {
        if (CLASSES && skey[c] != rkey) continue;
        // Same expression as the CPU: (area_i + area_j - inter) with i the earlier box. Disjoint
        // boxes give IoU +0 either way; skipping the division for them avoids its slow path.
        const T inter = fastdet::intersection(rbox.v, sbox[c].v);
        T v = T(0);
        if (inter > T(0))
          v = CONTAIN ? inter / sarea[c] : fastdet::iou_from(inter, rarea, sarea[c]);
        if (v > thr) bits |= Word(1) << c;
      }
      out[cb] = bits;
    }
  }
}

// ---------------------------------------------------------------------------- reduction

__device__ __forceinline__ Word warp_or(Word v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v |= __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// The greedy pass over one chunk of row blocks [rb0, rb1), one block, the chunk's removed words
// in shared memory. Per row block: warp 0 resolves its 64 rows (its removed word is complete:
// warp 0 itself folded in the previous block's kept rows), lists and emits the kept rows; one
// __syncthreads; then warp 0 folds the kept rows into the next block's word (and prefetches
// that block's diagonal) while warps 1.. OR them into the chunk's later words. Word rb + 1 is
// only touched by warp 0 and words > rb + 1 only by warps 1.., so one barrier per row block
// suffices. Words of later chunks are left to propagate_kernel.
template <bool CLASSES>
__global__ void __launch_bounds__(kReduceThreads)
    reduce_kernel(const Word* __restrict__ mask, int n, int nb, int rb0, int rb1,
                  const Word* __restrict__ removed_g, const int* __restrict__ col_end,
                  const int* __restrict__ order, const int* __restrict__ rank,
                  int64_t* __restrict__ keep, uint8_t* __restrict__ flags,
                  int* __restrict__ kept_rows, int* __restrict__ kept_count,
                  NmsHeader* __restrict__ hdr) {
  extern __shared__ Word rem[];     // removed words [rb0, rb1), indexed from rb0
  __shared__ int list_s[2][kTile];  // kept rows of a block, double-buffered by rb parity
  __shared__ int nk_s[2];
  const int tid = threadIdx.x, lane = tid & 31;
  for (int i = rb0 + tid; i < rb1; i += blockDim.x) rem[i - rb0] = removed_g[i];
  __syncthreads();
  Word w = 0, lo = 0, hi = 0;  // warp 0 state
  long long count = 0;         // warp 0: kept so far (nms), in this chunk (kc)
  int kc = 0;
  if (tid < 32) {
    w = rem[0];
    const int nrows = min(kTile, n - rb0 * kTile);
    if (lane < nrows) lo = mask[int64_t(lane) * nb + rb0];
    if (lane + 32 < nrows) hi = mask[int64_t(lane + 32) * nb + rb0];
    if (!CLASSES) count = hdr->count;
  }
  for (int rb = rb0; rb < rb1; ++rb) {
    const int buf = rb & 1;
    const Word* rows = mask + int64_t(rb - rb0) * kTile * nb;  // this block's mask rows
    if (tid < 32) {
      const Word kept = resolve_block(w, lo, hi, min(kTile, n - rb * kTile));
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int b = lane + 32 * h;
        if ((kept >> b) & 1) {
          const int pos = __popcll(kept & ((Word(1) << b) - 1));
          const int q = rb * kTile + b;
          list_s[buf][pos] = b;
          kept_rows[kc + pos] = q - rb0 * kTile;
          if (CLASSES)
            flags[rank[q]] = 1;
          else
            keep[count + pos] = order[q];
        }
      }
      if (lane == 0) nk_s[buf] = __popcll(kept);
      count += __popcll(kept);
      kc += __popcll(kept);
    }
    __syncthreads();
    const int nk = nk_s[buf];
    const int cend = min(CLASSES ? col_end[rb] : nb - 1, rb1 - 1);  // last word in this chunk
    if (tid < 32) {
      if (rb + 1 < rb1) {
        Word acc = 0;
        if (rb + 1 <= cend)
          for (int i = lane; i < nk; i += 32) acc |= rows[int64_t(list_s[buf][i]) * nb + rb + 1];
        const Word* next = rows + int64_t(kTile) * nb;  // prefetch the next diagonal
        const int nrows = min(kTile, n - (rb + 1) * kTile);
        lo = lane < nrows ? next[int64_t(lane) * nb + rb + 1] : 0;
        hi = lane + 32 < nrows ? next[int64_t(lane + 32) * nb + rb + 1] : 0;
        w = rem[rb + 1 - rb0] | warp_or(acc);  // last written before this barrier
      }
    } else if (nk > 0) {
      // Words rb+2 .. cend: split the (word, kept row) pairs over warps 1..; when words are
      // fewer than threads, S threads share a word (atomicOr) so the loads run in parallel.
      const int first = rb + 2, nw = cend - first + 1;
      if (nw > 0) {
        const int P = blockDim.x - 32;
        const int S = max(1, min(nk, P / nw));
        for (int idx = tid - 32; idx < nw * S; idx += P) {
          const int wd = first + idx % nw;
          Word acc = 0;
#pragma unroll 4
          for (int i = idx / nw; i < nk; i += S) acc |= rows[int64_t(list_s[buf][i]) * nb + wd];
          if (S == 1)
            rem[wd - rb0] |= acc;
          else if (acc)
            atomicOr(&rem[wd - rb0], acc);
        }
      }
    }
  }
  if (tid == 0) {
    *kept_count = kc;
    if (!CLASSES) hdr->count = count;
  }
}

constexpr int kPropRows = 64;  // kept rows per propagate block

// ORs the mask rows kept by chunk [rb0, rb1) into the removed words [rb1, nb) of later chunks:
// block (x, y) takes kept rows [64y, 64y + 64) and a strided range of words. GPU-wide, so the
// bulk of the OR traffic is not bound to the one SM of reduce_kernel.
template <bool CLASSES>
__global__ void propagate_kernel(const Word* __restrict__ mask, int nb, int rb0, int rb1,
                                 const int* __restrict__ kept_rows,
                                 const int* __restrict__ kept_count,
                                 const int* __restrict__ col_end, Word* __restrict__ removed) {
  const int g0 = blockIdx.y * kPropRows, g1 = min(*kept_count, g0 + kPropRows);
  if (g0 >= g1) return;
  // Batched: col_end is non-decreasing in rb, so words past the chunk's last col_end are idle.
  const int wend = CLASSES ? col_end[rb1 - 1] : nb - 1;
  for (int wd = rb1 + blockIdx.x * blockDim.x + threadIdx.x; wd <= wend;
       wd += gridDim.x * blockDim.x) {
    Word acc = 0;
    for (int i = g0; i < g1; ++i) {
      const int r = kept_rows[i];
      if (!CLASSES || wd <= col_end[rb0 + r / kTile]) acc |= mask[int64_t(r) * nb + wd];
    }
    if (acc) atomicOr(&removed[wd], acc);
  }
}

// ---------------------------------------------------------------------------- host

template <typename T, bool CLASSES, bool CONTAIN = false>
int64_t run(const T* boxes, const T* scores, const int64_t* idxs, int64_t n64, double iou_threshold,
            int64_t* keep, void* workspace, size_t workspace_bytes, int device, void* stream) {
  if (n64 <= 0) return 0;
  require_int32(n64, "nms: n");
  DeviceGuard guard(device);
  Buffers<T> B;
  if (!workspace || layout<T>(workspace, n64, CLASSES, &B) > workspace_bytes) return kOutOfMemory;
  cudaStream_t s = as_stream(stream);
  const int n = int(n64), nb = int(ceil_div(n, kTile));
  const unsigned g = grid_1d(n);
  size_t temp = B.temp_bytes;

  FASTDET_CUDA_CHECK(cudaMemsetAsync(B.removed, 0, size_t(nb) * sizeof(Word), s));
  if (CLASSES) FASTDET_CUDA_CHECK(cudaMemsetAsync(B.flags, 0, size_t(n), s));
  sort_by_score<4>(B, boxes, scores, n, B.temp, temp, s);
  if (CLASSES) {
    class_key_kernel<<<g, kThreads, 0, s>>>(idxs, B.order, n, B.ckey_in);
    FASTDET_CUDA_CHECK_LAUNCH();
    FASTDET_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(B.temp, temp, B.ckey_in, B.ckey_out, B.iota,
                                                       B.rank, n, 0, 64, s));
    col_end_kernel<<<grid_1d(nb), kThreads, 0, s>>>(B.ckey_out, n, nb, B.col_end);
    FASTDET_CUDA_CHECK_LAUNCH();
  }
  gather_kernel<T><<<g, kThreads, 0, s>>>(boxes, B.order, CLASSES ? B.rank : nullptr, n, B.sorted);
  FASTDET_CUDA_CHECK_LAUNCH();

  const T thr = threshold_as<T>(iou_threshold);
  const int crb = int(chunk_row_blocks(nb));
  for (int rb0 = 0; rb0 < nb; rb0 += crb) {
    const int rb1 = std::min(nb, rb0 + crb);
    const dim3 grid(unsigned(std::min(nb - rb0, kMaskStrides)), unsigned(rb1 - rb0));
    mask_kernel<T, CLASSES, CONTAIN>
        <<<grid, kTile, 0, s>>>(B.sorted, B.ckey_out, B.col_end, n, nb, rb0, thr, B.mask);
    FASTDET_CUDA_CHECK_LAUNCH();
    reduce_kernel<CLASSES><<<1, kReduceThreads, size_t(rb1 - rb0) * sizeof(Word), s>>>(
        B.mask, n, nb, rb0, rb1, B.removed, B.col_end, B.order, B.rank, keep, B.flags, B.kept_rows,
        B.kept_count, B.hdr);
    FASTDET_CUDA_CHECK_LAUNCH();
    if (rb1 < nb) {
      const dim3 pg(unsigned(std::min<int64_t>(ceil_div(nb - rb1, kThreads), 64)),
                    unsigned(ceil_div(int64_t(rb1 - rb0) * kTile, kPropRows)));
      propagate_kernel<CLASSES><<<pg, kThreads, 0, s>>>(B.mask, nb, rb0, rb1, B.kept_rows,
                                                        B.kept_count, B.col_end, B.removed);
      FASTDET_CUDA_CHECK_LAUNCH();
    }
  }
  if (CLASSES)  // kept original indices in score order; the count lands in the header
    FASTDET_CUDA_CHECK(
        cub::DeviceSelect::Flagged(B.temp, temp, B.order, B.flags, keep, &B.hdr->count, n, s));

  return read_result(B.hdr, s);
}

}  // namespace

size_t nms_workspace_bytes(int64_t n) { return workspace_bytes(n, false); }
size_t batched_nms_workspace_bytes(int64_t n) { return workspace_bytes(n, true); }
size_t suppress_contained_workspace_bytes(int64_t n) { return workspace_bytes(n, true); }

template <typename T>
int64_t nms(const T* boxes, const T* scores, int64_t n, double iou_threshold, int64_t* keep,
            void* workspace, size_t workspace_bytes, int device, void* stream) {
  return run<T, false>(boxes, scores, nullptr, n, iou_threshold, keep, workspace, workspace_bytes,
                       device, stream);
}

template <typename T>
int64_t batched_nms(const T* boxes, const T* scores, const int64_t* idxs, int64_t n,
                    double iou_threshold, int64_t* keep, void* workspace, size_t workspace_bytes,
                    int device, void* stream) {
  return run<T, true>(boxes, scores, idxs, n, iou_threshold, keep, workspace, workspace_bytes,
                      device, stream);
}

template <typename T>
int64_t suppress_contained(const T* boxes, const T* scores, const int64_t* idxs, int64_t n,
                           double fraction, int64_t* keep, void* workspace, size_t workspace_bytes,
                           int device, void* stream) {
  return run<T, true, true>(boxes, scores, idxs, n, fraction, keep, workspace, workspace_bytes,
                            device, stream);
}

#define FASTDET_INSTANTIATE(T)                                                                   \
  template int64_t nms<T>(const T*, const T*, int64_t, double, int64_t*, void*, size_t, int,     \
                          void*);                                                                \
  template int64_t batched_nms<T>(const T*, const T*, const int64_t*, int64_t, double, int64_t*, \
                                  void*, size_t, int, void*);                                    \
  template int64_t suppress_contained<T>(const T*, const T*, const int64_t*, int64_t, double,    \
                                         int64_t*, void*, size_t, int, void*);
FASTDET_INSTANTIATE(float)
FASTDET_INSTANTIATE(double)

}  // namespace fastdet::cuda
