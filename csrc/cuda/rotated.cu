// box_iou_rotated and nms_rotated (plain or per class) on the GPU; the geometry is
// fastdet/rotated.h, the CPU's, so both devices give the same IoU bits (-fmad=false).
//
// box_iou_rotated: each thread owns one column box (its RBox in registers) and walks a tile of
// row boxes prepared once per block in shared memory; writes are coalesced along the row.
// Pairs whose bounding circles miss cost a few flops; the rest are clipped.
//
// nms_rotated: order-preserving descending score keys (-0 == +0) -> stable cub radix sort (ties:
// lower index first) -> RBoxes gathered in that order -> 64x64 suppression tiles, bit j of row
// i's word set when rotated_iou_above(i, j, t) (and, with classes, both have the same class),
// upper triangle only, for CHUNKS of rows so the mask stays within nms.cuh's bound -> one block
// takes the chunk's row blocks in order: warp 0 resolves 64 rows from their diagonal words and the
// removed bits, writes the kept indices (already in score order), and the block ORs the kept
// rows into the removed words of all later columns. The host reads count + non-finite flag in
// one copy and synchronises once.
//
// Floors: the sort; ~n^2/2 pair tests for the mask (a bound first, the clipping only where it
// does not settle the pair); kept * nb / 2 mask words read by the one reducing block.
//
// Workspace, every piece rounded up to 256 bytes, plus 256 for an unaligned base:
//   nb = ceil(n / 64); R = 64 * min(nb, max(64, 2^17 / nb)) mask rows per chunk
//   header 16 | score keys in, out 2 * n * 8 | iota, order 2 * n * 4 | cub sort temp
//   | gathered boxes n * sizeof(RBox<double>) | classes n * 8 (with idxs) | mask R * nb * 8
//   | removed bits nb * 8
#include <algorithm>
#include <type_traits>

#include "fastdet/rotated.h"
#include "nms.cuh"

namespace fastdet::cuda {
namespace {
using namespace detail;

constexpr int kIouThreads = 128;  // column boxes per block
constexpr int kIouRows = 32;      // row boxes staged per step
constexpr int kReduceThreads = 256;

// ---------------------------------------------------------------------------- box_iou_rotated

template <typename T>
__global__ void __launch_bounds__(kIouThreads)
    iou_kernel(const T* __restrict__ a, int64_t n, const T* __restrict__ b, int64_t m,
               T* __restrict__ out) {
  __shared__ RBox<T> rows[kIouRows];
  const int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const bool ok = j < m;
  RBox<T> col{};
  if (ok) col = make_rbox(b + 5 * j);
  for (int64_t i0 = int64_t(blockIdx.y) * kIouRows; i0 < n; i0 += int64_t(gridDim.y) * kIouRows) {
    const int nr = int(min(int64_t(kIouRows), n - i0));
    __syncthreads();  // the previous rows' reads are done
    for (int r = threadIdx.x; r < nr; r += blockDim.x) rows[r] = make_rbox(a + 5 * (i0 + r));
    __syncthreads();
    if (ok)
      for (int r = 0; r < nr; ++r) out[(i0 + r) * m + j] = rotated_iou(rows[r], col);
  }
}

// ---------------------------------------------------------------------------- nms_rotated

template <typename T> struct Buffers : ScoreOrder<T> {
  void* temp;
  size_t temp_bytes;
  RBox<T>* sorted;
  int64_t* cls;  // classes in sorted order (with idxs only)
  Word* mask;
  Word* removed;
};

// Carves (or, with base == nullptr, measures) the workspace; returns the bytes it needs.
template <typename T> size_t layout(void* base, int64_t n, bool classes, Buffers<T>* b) {
  Carver c(base);
  const int64_t nb = ceil_div(n, kTile);
  b->carve(c, n);
  b->temp_bytes = score_sort_temp<T>(int(n));
  b->temp = c.take_bytes(b->temp_bytes);
  b->sorted = c.take<RBox<T>>(n);
  b->cls = classes ? c.take<int64_t>(n) : nullptr;
  b->mask = c.take<Word>(chunk_row_blocks(nb) * kTile * nb);
  b->removed = c.take<Word>(nb);
  return base ? c.used() : c.bytes();
}

template <typename T>
__global__ void gather_kernel(const T* __restrict__ boxes, const int64_t* __restrict__ idxs,
                              const int* __restrict__ order, int n, RBox<T>* __restrict__ sorted,
                              int64_t* __restrict__ cls) {
  for (int k = blockIdx.x * blockDim.x + threadIdx.x; k < n; k += gridDim.x * blockDim.x) {
    const int i = order[k];
    sorted[k] = make_rbox(boxes + 5 * int64_t(i));
    if (idxs) cls[k] = idxs[i];
  }
}

// Row blocks rb0 + blockIdx.y of the chunk, column blocks rb.. striding by gridDim.x; one thread
// per row, the column block's boxes in shared memory. Rows are chunk-local in `mask`.
template <typename T, bool CLASSES>
__global__ void __launch_bounds__(kTile)
    mask_kernel(const RBox<T>* __restrict__ sorted, const int64_t* __restrict__ cls, int n, int nb,
                int rb0, double t, Word* __restrict__ mask) {
  __shared__ RBox<T> cols[kTile];
  __shared__ int64_t ccls[kTile];
  const int rb = rb0 + blockIdx.y, tid = threadIdx.x, i = rb * kTile + tid;
  RBox<T> row{};
  int64_t rcls = 0;
  if (i < n) {
    row = sorted[i];
    if (CLASSES) rcls = cls[i];
  }
  for (int cb = rb + blockIdx.x; cb < nb; cb += gridDim.x) {
    const int j0 = cb * kTile, nc = min(kTile, n - j0);
    __syncthreads();  // the previous column block's reads are done
    if (tid < nc) {
      cols[tid] = sorted[j0 + tid];
      if (CLASSES) ccls[tid] = cls[j0 + tid];
    }
    __syncthreads();
    if (i >= n) continue;
    Word w = 0;
    for (int c = cb == rb ? tid + 1 : 0; c < nc; ++c) {
      if (CLASSES && ccls[c] != rcls) continue;
      if (rotated_iou_above(row, cols[c], t)) w |= Word(1) << c;
    }
    mask[int64_t(i - rb0 * kTile) * nb + cb] = w;
  }
}

// The greedy pass over row blocks [rb0, rb1) in order; see the file comment.
__global__ void __launch_bounds__(kReduceThreads)
    reduce_kernel(const Word* __restrict__ mask, int n, int nb, int rb0, int rb1,
                  Word* __restrict__ removed, const int* __restrict__ order,
                  int64_t* __restrict__ keep, NmsHeader* __restrict__ hdr) {
  __shared__ int list[kTile];
  __shared__ int nk_s;
  const int tid = threadIdx.x, lane = tid & 31;
  long long count = hdr->count;  // kept by earlier chunks (warp 0's copy is the one used)
  for (int rb = rb0; rb < rb1; ++rb) {
    const Word* rows = mask + int64_t(rb - rb0) * kTile * nb;
    if (tid < 32) {
      const int nrows = min(kTile, n - rb * kTile);
      const Word lo = lane < nrows ? rows[int64_t(lane) * nb + rb] : 0;
      const Word hi = lane + 32 < nrows ? rows[int64_t(lane + 32) * nb + rb] : 0;
      const Word kept = resolve_block(removed[rb], lo, hi, nrows);
      for (int h = 0; h < 2; ++h) {
        const int b = lane + 32 * h;
        if ((kept >> b) & 1) {
          const int pos = __popcll(kept & ((Word(1) << b) - 1));
          list[pos] = b;
          keep[count + pos] = order[rb * kTile + b];
        }
      }
      if (lane == 0) nk_s = __popcll(kept);
      count += __popcll(kept);
    }
    __syncthreads();
    const int nk = nk_s;
    for (int wd = rb + 1 + tid; wd < nb; wd += blockDim.x) {
      Word acc = 0;
#pragma unroll 4
      for (int k = 0; k < nk; ++k) acc |= rows[int64_t(list[k]) * nb + wd];
      removed[wd] |= acc;
    }
    __syncthreads();  // removed[rb + 1] and list are complete for the next row block
  }
  if (tid == 0) hdr->count = count;
}

template <typename T>
int64_t run_nms(const T* boxes, const T* scores, const int64_t* idxs, int64_t n64, double t,
                int64_t* keep, void* workspace, size_t workspace_bytes, int device, void* stream) {
  if (n64 <= 0) return 0;
  require_int32(n64, "nms_rotated: n");
  DeviceGuard guard(device);
  const bool classes = idxs != nullptr;
  Buffers<T> B;
  if (!workspace || layout<T>(workspace, n64, classes, &B) > workspace_bytes) return kOutOfMemory;
  cudaStream_t s = as_stream(stream);
  const int n = int(n64), nb = int(ceil_div(n, kTile));
  const unsigned g = grid_1d(n);

  FASTDET_CUDA_CHECK(cudaMemsetAsync(B.removed, 0, size_t(nb) * sizeof(Word), s));
  sort_by_score<5>(B, boxes, scores, n, B.temp, B.temp_bytes, s);
  gather_kernel<T><<<g, kThreads, 0, s>>>(boxes, idxs, B.order, n, B.sorted, B.cls);
  FASTDET_CUDA_CHECK_LAUNCH();
  const int crb = int(chunk_row_blocks(nb));
  for (int rb0 = 0; rb0 < nb; rb0 += crb) {
    const int rb1 = std::min(nb, rb0 + crb);
    const dim3 grid(unsigned(std::min(nb - rb0, kMaskStrides)), unsigned(rb1 - rb0));
    if (classes)
      mask_kernel<T, true><<<grid, kTile, 0, s>>>(B.sorted, B.cls, n, nb, rb0, t, B.mask);
    else
      mask_kernel<T, false><<<grid, kTile, 0, s>>>(B.sorted, B.cls, n, nb, rb0, t, B.mask);
    FASTDET_CUDA_CHECK_LAUNCH();
    reduce_kernel<<<1, kReduceThreads, 0, s>>>(B.mask, n, nb, rb0, rb1, B.removed, B.order, keep,
                                               B.hdr);
    FASTDET_CUDA_CHECK_LAUNCH();
  }
  return read_result(B.hdr, s);
}

}  // namespace

template <typename T>
void box_iou_rotated(const T* a, int64_t n, const T* b, int64_t m, T* out, int device,
                     void* stream) {
  if (n <= 0 || m <= 0) return;
  DeviceGuard guard(device);
  const int64_t gx = ceil_div(m, kIouThreads);
  if (gx > INT_MAX) throw std::invalid_argument("fastdet CUDA box_iou_rotated: m too large");
  const dim3 grid(unsigned(gx), unsigned(std::min<int64_t>(ceil_div(n, kIouRows), 65535)));
  iou_kernel<T><<<grid, kIouThreads, 0, as_stream(stream)>>>(a, n, b, m, out);
  FASTDET_CUDA_CHECK_LAUNCH();
}

size_t nms_rotated_workspace_bytes(int64_t n, bool batched) {
  return max_workspace_bytes(n, "nms_rotated: n", [&](auto tag) {
    Buffers<std::remove_pointer_t<decltype(tag)>> b;
    return layout(nullptr, n, batched, &b);
  });
}

template <typename T>
int64_t nms_rotated(const T* boxes, const T* scores, const int64_t* idxs, int64_t n,
                    double iou_threshold, int64_t* keep, void* workspace, size_t workspace_bytes,
                    int device, void* stream) {
  return run_nms(boxes, scores, idxs, n, iou_threshold, keep, workspace, workspace_bytes, device,
                 stream);
}

#define FASTDET_INSTANTIATE(T)                                                                   \
  template void box_iou_rotated<T>(const T*, int64_t, const T*, int64_t, T*, int, void*);        \
  template int64_t nms_rotated<T>(const T*, const T*, const int64_t*, int64_t, double, int64_t*, \
                                  void*, size_t, int, void*);
FASTDET_INSTANTIATE(float)
FASTDET_INSTANTIATE(double)

}  // namespace fastdet::cuda
