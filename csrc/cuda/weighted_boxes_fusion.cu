// Weighted boxes fusion's clustering on the GPU: one block per label segment (boxes already
// filtered, clipped and sorted by decreasing weighted score on the device, see
// fastdet/ops/weighted_boxes_fusion.py). Boxes are taken one at a time, as the rules require;
// for each, the block's threads compare it with all clusters of the segment and a block
// reduction picks the best (highest IoU > iou_thr, lowest cluster on ties); thread 0 then
// starts or grows the cluster with the arithmetic of fastdet/wbf.h, shared with the CPU.
// Floor: per box one pass over the clusters plus two barriers; the segments run in parallel.
// Workspace: one wbf::Cluster per box.
#include "common.cuh"
#include "fastdet/ops.h"
#include "fastdet/wbf.h"

namespace fastdet::cuda {
namespace {
using namespace detail;

constexpr int kWbfThreads = 256;
constexpr unsigned kFull = 0xffffffffu;

struct Match {
  double iou;
  int arg;  // -1: none
};

// a beats b: a higher IoU, then the lower cluster; no match never wins.
__device__ __forceinline__ bool beats(const Match& a, const Match& b) {
  if (a.arg < 0) return false;
  if (b.arg < 0) return true;
  return a.iou > b.iou || (a.iou == b.iou && a.arg < b.arg);
}

__device__ __forceinline__ Match warp_best(Match m) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const Match d{__shfl_down_sync(kFull, m.iou, o), __shfl_down_sync(kFull, m.arg, o)};
    if (beats(d, m)) m = d;
  }
  return m;
}

__global__ void __launch_bounds__(kWbfThreads)
    wbf_cluster_kernel(const double* __restrict__ boxes, const double* __restrict__ ws,
                       const double* __restrict__ w, const int64_t* __restrict__ pos,
                       const int64_t* __restrict__ seg, double iou_thr, int conf_type,
                       wbf::Cluster* __restrict__ clusters, double* __restrict__ out_boxes,
                       double* __restrict__ out_s, double* __restrict__ out_w,
                       int64_t* __restrict__ out_count, int64_t* __restrict__ out_first,
                       int64_t* __restrict__ ncl, int64_t* __restrict__ assign) {
  __shared__ Match warp_top[kWbfThreads / 32];
  __shared__ int n_clusters;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t base = seg[blockIdx.x];
  const int len = int(seg[blockIdx.x + 1] - base);
  wbf::Cluster* cl = clusters + base;
  if (tid == 0) n_clusters = 0;
  __syncthreads();
  for (int i = 0; i < len; ++i) {
    const int64_t g = base + i;
    const double b[4] = {boxes[4 * g], boxes[4 * g + 1], boxes[4 * g + 2], boxes[4 * g + 3]};
    const int nc = n_clusters;  // written by thread 0 before the last barrier
    Match m{iou_thr, -1};
    for (int c = tid; c < nc; c += blockDim.x) {  // c rises: a strict > keeps the lowest
      const double o = wbf::iou(cl[c].box, b);
      if (o > m.iou) m = Match{o, c};
    }
    m = warp_best(m);
    if (lane == 0) warp_top[warp] = m;
    __syncthreads();
    if (warp == 0) {
      const int nw = blockDim.x >> 5;
      m = lane < nw ? warp_top[lane] : Match{0.0, -1};
      m = warp_best(m);
      if (lane == 0) {
        if (m.arg < 0) {
          wbf::start(cl[nc], b, ws[g], w[g], pos[g]);
          n_clusters = nc + 1;
          assign[g] = nc;
        } else {
          wbf::join(cl[m.arg], b, ws[g], w[g]);
          assign[g] = m.arg;
        }
      }
    }
    __syncthreads();  // the cluster and n_clusters are visible to the next box's pass
  }
  const int nc = n_clusters;
  for (int c = tid; c < nc; c += blockDim.x) {
    const int64_t r = base + c;
    for (int k = 0; k < 4; ++k) out_boxes[4 * r + k] = cl[c].box[k];
    out_s[r] = wbf::stored_score(cl[c], conf_type);
    out_w[r] = wbf::stored_weight(cl[c]);
    out_count[r] = cl[c].count;
    out_first[r] = cl[c].first;
  }
  if (tid == 0) ncl[blockIdx.x] = nc;
}

}  // namespace

size_t wbf_cluster_workspace_bytes(int64_t k) {
  return k <= 0 ? 0 : size_t(k) * sizeof(wbf::Cluster) + 256;
}

void wbf_cluster(const double* boxes, const double* ws, const double* w, const int64_t* pos,
                 const int64_t* seg, int64_t nseg, double iou_thr, int conf_type, double* out_boxes,
                 double* out_s, double* out_w, int64_t* out_count, int64_t* out_first, int64_t* ncl,
                 int64_t* assign, void* workspace, size_t workspace_bytes, int device,
                 void* stream) {
  if (nseg <= 0) return;
  require_int32(nseg, "wbf_cluster: segments");
  DeviceGuard guard(device);
  // 256-byte aligned start for the clusters (the workspace comes from a byte allocator).
  const uintptr_t p = (reinterpret_cast<uintptr_t>(workspace) + 255) & ~uintptr_t(255);
  auto* clusters = reinterpret_cast<wbf::Cluster*>(p);
  if (!workspace || workspace_bytes < 256) throw std::invalid_argument("wbf_cluster: workspace");
  wbf_cluster_kernel<<<unsigned(nseg), kWbfThreads, 0, as_stream(stream)>>>(
      boxes, ws, w, pos, seg, iou_thr, conf_type, clusters, out_boxes, out_s, out_w, out_count,
      out_first, ncl, assign);
  FASTDET_CUDA_CHECK_LAUNCH();
}

}  // namespace fastdet::cuda
