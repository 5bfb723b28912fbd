// soft_nms (Bodla et al., 2017) on the GPU: one persistent block.
// Each step appends the best live box (highest current score, lower index on ties) and, in the
// same pass that finds the next best, decays every other live box: linear (method 0)
// s *= 1 - iou when iou > iou_threshold, gaussian s *= exp(-iou^2 / sigma), in double as the
// CPU does; a box whose decayed score falls below score_threshold dies.
// Floor: O(n * selected) IoUs, ~n^2/2 when most boxes survive, and the selections are serial:
// each costs one pass over the live boxes and a block reduction (2 barriers). A single block is
// the price of having no host round trip per step; the live list is compacted whenever it
// halves, so passes shrink with it (compaction moves <= 2n boxes in total).
//
// Workspace: header 16 | two live lists (ping-pong), each boxes n * 4T | scores n * T |
// original indices n * 4; pieces rounded up to 256 bytes, plus 256 for an unaligned base.
#include <algorithm>
#include <cmath>

#include "common.cuh"
#include "fastdet/box.h"
#include "fastdet/ops.h"

namespace fastdet::cuda {
namespace {
using namespace detail;

constexpr int kSoftThreads = 1024;
constexpr unsigned kFull = 0xffffffffu;

template <typename T> struct Live {
  Box4<T>* box;
  T* s;
  int* idx;  // original index; -1 once the box is selected or dead
};

template <typename T> struct Cand {
  T s;
  int idx;  // -1: none
  int pos;  // position in the live list
};

// a ranks before b: higher score, then lower original index; a missing candidate never wins.
template <typename T> __device__ __forceinline__ bool better(const Cand<T>& a, const Cand<T>& b) {
  if (a.idx < 0) return false;
  if (b.idx < 0) return true;
  return a.s > b.s || (a.s == b.s && a.idx < b.idx);
}

template <typename T> struct Scratch {
  Cand<T> warp_best[32];
  int warp_alive[32];
  Cand<T> best;  // result of block_best
  int alive;
  int scan[33];
  int bad;
};

// Warp-wide best candidate and live count, in lane 0.
template <typename T> __device__ __forceinline__ void warp_best(Cand<T>& c, int& alive) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    Cand<T> d{__shfl_down_sync(kFull, c.s, o), __shfl_down_sync(kFull, c.idx, o),
              __shfl_down_sync(kFull, c.pos, o)};
    alive += __shfl_down_sync(kFull, alive, o);
    if (better(d, c)) c = d;
  }
}

// Block-wide best candidate and live count into sh.best / sh.alive (visible on return).
template <typename T> __device__ void block_best(Cand<T> c, int alive, Scratch<T>& sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  warp_best(c, alive);
  if (lane == 0) {
    sh.warp_best[warp] = c;
    sh.warp_alive[warp] = alive;
  }
  __syncthreads();
  if (warp == 0) {
    const int nw = blockDim.x >> 5;
    c = lane < nw ? sh.warp_best[lane] : Cand<T>{T(0), -1, 0};
    alive = lane < nw ? sh.warp_alive[lane] : 0;
    warp_best(c, alive);
    if (lane == 0) {
      sh.best = c;
      sh.alive = alive;
    }
  }
  __syncthreads();
}

// Block-wide exclusive prefix sum of v; *total gets the sum. Ends with a barrier so `sc` can be
// reused by the next call.
__device__ int block_exclusive_scan(int v, int* total, int* sc) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  int x = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int y = __shfl_up_sync(kFull, x, o);
    if (lane >= o) x += y;
  }
  if (lane == 31) sc[warp] = x;
  __syncthreads();
  if (warp == 0) {
    int t = lane < nw ? sc[lane] : 0;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int y = __shfl_up_sync(kFull, t, o);
      if (lane >= o) t += y;
    }
    if (lane < nw) sc[lane] = t;
    if (lane == 31) sc[32] = t;
  }
  __syncthreads();
  *total = sc[32];
  const int r = (warp ? sc[warp - 1] : 0) + x - v;
  __syncthreads();
  return r;
}

template <typename T>
__global__ void __launch_bounds__(kSoftThreads)
    soft_nms_kernel(const T* __restrict__ boxes, const T* __restrict__ scores, int n,
                    double iou_thr, double sigma, double score_thr, int method,
                    int64_t* __restrict__ keep, T* __restrict__ out_scores, Live<T> cur,
                    Live<T> oth, NmsHeader* __restrict__ hdr) {
  __shared__ Scratch<T> sh;
  const int tid = threadIdx.x;
  if (tid == 0) sh.bad = 0;
  __syncthreads();

  // Finite check, and the boxes at or above score_threshold into `cur`, in index order.
  int len = 0;
  for (int t0 = 0; t0 < n; t0 += blockDim.x) {
    const int i = t0 + tid;
    bool live = false;
    T s = T(0);
    Box4<T> b{};
    if (i < n) {
      s = scores[i];
#pragma unroll
      for (int c = 0; c < 4; ++c) b.v[c] = boxes[int64_t(i) * 4 + c];
      if (!(isfinite(s) && isfinite(b.v[0]) && isfinite(b.v[1]) && isfinite(b.v[2]) &&
            isfinite(b.v[3])))
        sh.bad = 1;
      live = double(s) >= score_thr;
    }
    int total;
    const int pos = len + block_exclusive_scan(live, &total, sh.scan);
    if (live) {
      cur.box[pos] = b;
      cur.s[pos] = s;
      cur.idx[pos] = i;
    }
    len += total;
  }
  __syncthreads();  // the last tile's writes to `cur` are visible to every thread
  if (sh.bad) {     // uniform: written before the barriers above
    if (tid == 0) hdr->nonfinite = 1;
    return;
  }

  Cand<T> c{T(0), -1, 0};
  for (int k = tid; k < len; k += blockDim.x) {
    const Cand<T> t{cur.s[k], cur.idx[k], k};
    if (better(t, c)) c = t;
  }
  block_best(c, 0, sh);

  long long count = 0;
  for (;;) {
    const Cand<T> best = sh.best;  // written by block_best before its last barrier
    if (best.idx < 0) break;
    const Box4<T> bb = cur.box[best.pos];
    const T barea = fastdet::box_area(bb.v);
    if (tid == 0) {
      keep[count] = best.idx;
      out_scores[count] = best.s;
    }
    ++count;
    Cand<T> loc{T(0), -1, 0};
    int alive = 0;
    for (int k = tid; k < len; k += blockDim.x) {
      const int id = cur.idx[k];
      if (id < 0) continue;
      if (k == best.pos) {
        cur.idx[k] = -1;
        continue;
      }
      // fastdet::iou(bb, box), skipping the division (and its slow path) for disjoint boxes
      const Box4<T> bk = cur.box[k];
      const T inter = fastdet::intersection(bb.v, bk.v);
      const T area = fastdet::box_area(bk.v);
      const double o = inter > T(0) ? double(fastdet::iou_from(inter, barea, area)) : 0.0;
      const double f = method == kLinear ? (o > iou_thr ? 1.0 - o : 1.0) : exp(-(o * o) / sigma);
      const T ns = T(double(cur.s[k]) * f);
      if (double(ns) < score_thr) {
        cur.idx[k] = -1;
        continue;
      }
      cur.s[k] = ns;
      ++alive;
      const Cand<T> t{ns, id, k};
      if (better(t, loc)) loc = t;
    }
    block_best(loc, alive, sh);
    const int nalive = sh.alive;
    if (nalive > 0 && 2 * nalive < len && len > int(blockDim.x)) {
      // Compact the live boxes into `oth`; the thread moving the best box updates its position
      // (everyone read sh.best's position into a register before the first scan barrier).
      const int best_pos = sh.best.pos;
      int moved = 0;
      for (int t0 = 0; t0 < len; t0 += blockDim.x) {
        const int k = t0 + tid;
        const bool live = k < len && cur.idx[k] >= 0;
        int total;
        const int pos = moved + block_exclusive_scan(live, &total, sh.scan);
        if (live) {
          oth.box[pos] = cur.box[k];
          oth.s[pos] = cur.s[k];
          oth.idx[pos] = cur.idx[k];
          if (k == best_pos) sh.best.pos = pos;
        }
        moved += total;
      }
      __syncthreads();  // the new best position is visible to the loop head
      const Live<T> t = cur;
      cur = oth;
      oth = t;
      len = moved;
    }
  }
  if (tid == 0) hdr->count = count;
}

template <typename T>
size_t layout(void* base, int64_t n, NmsHeader** hdr, Live<T>* a, Live<T>* b) {
  Carver c(base);
  *hdr = c.take<NmsHeader>(1);
  for (Live<T>* l : {a, b}) {
    l->box = c.take<Box4<T>>(n);
    l->s = c.take<T>(n);
    l->idx = c.take<int>(n);
  }
  return base ? c.used() : c.bytes();
}

}  // namespace

size_t soft_nms_workspace_bytes(int64_t n) {
  if (n <= 0) return 0;
  require_int32(n, "soft_nms: n");
  NmsHeader* h;
  Live<float> fa, fb;
  Live<double> da, db;
  return std::max(layout<float>(nullptr, n, &h, &fa, &fb),
                  layout<double>(nullptr, n, &h, &da, &db));
}

template <typename T>
int64_t soft_nms(const T* boxes, const T* scores, int64_t n, double iou_threshold, double sigma,
                 double score_threshold, int method, int64_t* keep, T* out_scores, void* workspace,
                 size_t workspace_bytes, int device, void* stream) {
  if (n <= 0) return 0;
  require_int32(n, "soft_nms: n");
  DeviceGuard guard(device);
  NmsHeader* hdr;
  Live<T> a, b;
  if (!workspace || layout<T>(workspace, n, &hdr, &a, &b) > workspace_bytes) return kOutOfMemory;
  cudaStream_t s = as_stream(stream);
  FASTDET_CUDA_CHECK(cudaMemsetAsync(hdr, 0, sizeof(NmsHeader), s));
  soft_nms_kernel<T><<<1, kSoftThreads, 0, s>>>(boxes, scores, int(n), iou_threshold, sigma,
                                                score_threshold, method, keep, out_scores, a, b,
                                                hdr);
  FASTDET_CUDA_CHECK_LAUNCH();
  NmsHeader h{};
  FASTDET_CUDA_CHECK(cudaMemcpyAsync(&h, hdr, sizeof h, cudaMemcpyDeviceToHost, s));
  FASTDET_CUDA_CHECK(cudaStreamSynchronize(s));
  return h.nonfinite ? int64_t(kNonFinite) : int64_t(h.count);
}

#define FASTDET_INSTANTIATE(T)                                                                     \
  template int64_t soft_nms<T>(const T*, const T*, int64_t, double, double, double, int, int64_t*, \
                               T*, void*, size_t, int, void*);
FASTDET_INSTANTIATE(float)
FASTDET_INSTANTIATE(double)

}  // namespace fastdet::cuda
