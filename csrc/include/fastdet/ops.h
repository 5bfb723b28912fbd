// Kernel entry points: pointers and sizes in, caller-allocated outputs. No Python, no torch.
// Every array is C-contiguous. T is float or double. Boxes are [n, 4] (x1, y1, x2, y2).
// Functions returning int64_t report a count; a negative value is a Status below.
#pragma once
#include <cstddef>
#include <cstdint>

namespace fastdet {

enum Status : int64_t {
  kNonFinite = -1,    // a box coordinate or score is NaN or inf
  kOutOfMemory = -2,  // the workspace given is too small
  kBadIndex = -3,     // an index argument (weighted_boxes_fusion's model) is out of range
};

// soft_nms decay
enum SoftNmsMethod : int { kLinear = 0, kGaussian = 1 };

// The pairwise IoU family: IoU, generalized (GIoU), distance (DIoU) and complete (CIoU).
enum IouKind : int { kIou = 0, kGiou = 1, kDiou = 2, kCiou = 3 };

namespace cpu {
int max_threads();
void set_num_threads(int n);

template <typename T> int64_t count_nonfinite(const T* x, int64_t n);
// Values that are NaN, inf or of magnitude > limit, in one pass.
template <typename T> int64_t count_beyond(const T* x, int64_t n, double limit);
template <typename T>
int64_t remove_small_boxes(const T* boxes, int64_t n, double min_size, int64_t* keep);
// Weighted boxes fusion (ensemble-boxes' rules, fastdet/wbf.h): n boxes of all models, each with
// its score, int64 label, model index in [0, n_models) and skip flag (score below the
// threshold); weights [n_models], weight_sum and weight_max their numpy sum and max; conf_type a
// wbf::ConfType. Out: room for n fused boxes [n, 4], scores and labels, in decreasing score
// (ties: the cluster's first box in input order); returns their count or a negative Status.
int64_t weighted_boxes_fusion(const double* boxes, const double* scores, const int64_t* labels,
                              const int64_t* models, const uint8_t* skip, int64_t n,
                              const double* weights, int64_t n_models, double weight_sum,
                              double weight_max, double iou_thr, int conf_type,
                              bool allows_overflow, double* out_boxes, double* out_scores,
                              int64_t* out_labels);
}  // namespace cpu

namespace cuda {
bool available();
int device_count();
const char* version();  // runtime version, e.g. "13.0"
const char* archs();    // architectures compiled in, e.g. "75;80;86;89;90;100;120"

// The workspace bytes of the kernels that take one.
size_t nms_workspace_bytes(int64_t n);
size_t batched_nms_workspace_bytes(int64_t n);
size_t suppress_contained_workspace_bytes(int64_t n);
size_t soft_nms_workspace_bytes(int64_t n);
size_t roi_align_backward_workspace_bytes(int64_t N, int64_t C, int64_t H, int64_t W,
                                          bool deterministic);
size_t wbf_cluster_workspace_bytes(int64_t k);
size_t nms_rotated_workspace_bytes(int64_t n, bool batched);  // batched: idxs given
}  // namespace cuda

// The kernels both backends have are declared once, in kernels.h, included into each namespace:
// FASTDET_CUDA(...) holds the arguments only the CUDA kernel takes, dropped for the CPU. A CUDA
// kernel takes (device, stream) last: stream a cudaStream_t, device the CUDA index of every
// pointer; before them a workspace where it needs one, of the *_workspace_bytes above.
#define FASTDET_STREAM FASTDET_CUDA(, int device, void* stream)
#define FASTDET_WORKSPACE FASTDET_CUDA(, void* workspace, size_t workspace_bytes)
namespace cpu {
#define FASTDET_CUDA(...)
#include "fastdet/kernels.h"
#undef FASTDET_CUDA
}  // namespace cpu
namespace cuda {
#define FASTDET_CUDA(...) __VA_ARGS__
#include "fastdet/kernels.h"
#undef FASTDET_CUDA
}  // namespace cuda
#undef FASTDET_WORKSPACE
#undef FASTDET_STREAM

}  // namespace fastdet
