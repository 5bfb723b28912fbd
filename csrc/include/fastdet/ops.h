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
template <typename T> void box_area(const T* boxes, int64_t n, T* out);
template <typename T> void box_iou(const T* a, int64_t n, const T* b, int64_t m, T* out);
template <typename T>
void generalized_box_iou(const T* a, int64_t n, const T* b, int64_t m, T* out);
// batch independent pairs of box sets: a [batch, n, 4], b [batch, m, 4] -> out [batch, n, m].
// eps: DIoU's and CIoU's (torchvision's default 1e-7); ignored by IoU and GIoU.
template <typename T>
void pairwise_iou(IouKind kind, const T* a, const T* b, int64_t batch, int64_t n, int64_t m,
                  double eps, T* out);

// keep: room for n indices, written in decreasing score (ties: lower index first).
template <typename T>
int64_t nms(const T* boxes, const T* scores, int64_t n, double iou_threshold, int64_t* keep);
template <typename T>
int64_t batched_nms(const T* boxes, const T* scores, const int64_t* idxs, int64_t n,
                    double iou_threshold, int64_t* keep);
// keep and out_scores: room for n; entries in selection order (decreasing decayed score).
template <typename T>
int64_t soft_nms(const T* boxes, const T* scores, int64_t n, double iou_threshold, double sigma,
                 double score_threshold, int method, int64_t* keep, T* out_scores);

// input [N, C, H, W]; rois [K, 5] (batch index, x1, y1, x2, y2); out [K, C, PH, PW].
template <typename T>
void roi_align_forward(const T* input, int64_t N, int64_t C, int64_t H, int64_t W, const T* rois,
                       int64_t K, int64_t PH, int64_t PW, double spatial_scale,
                       int64_t sampling_ratio, bool aligned, T* out);
// grad_input [N, C, H, W] is overwritten (not accumulated into).
template <typename T>
void roi_align_backward(const T* grad_out, int64_t N, int64_t C, int64_t H, int64_t W,
                        const T* rois, int64_t K, int64_t PH, int64_t PW, double spatial_scale,
                        int64_t sampling_ratio, bool aligned, T* grad_input);
// RoIPool (Fast R-CNN): out [K, C, PH, PW] and argmax [K, C, PH, PW] (index h * W + w of the
// maximum within its plane, -1 for an empty bin, whose output is 0). Backward overwrites
// grad_input [N, C, H, W] (deterministic: threads own channels).
template <typename T>
void roi_pool_forward(const T* input, int64_t N, int64_t C, int64_t H, int64_t W, const T* rois,
                      int64_t K, int64_t PH, int64_t PW, double spatial_scale, T* out,
                      int32_t* argmax);
template <typename T>
void roi_pool_backward(const T* grad_out, const int32_t* argmax, const T* rois, int64_t K,
                       int64_t N, int64_t C, int64_t H, int64_t W, int64_t PH, int64_t PW,
                       T* grad_input);

// One feature level: out[(y * gw + x) * A + a] = base[a] + (x*sw, y*sh, x*sw, y*sh).
template <typename T>
void grid_anchors(const T* base, int64_t A, int64_t gh, int64_t gw, double stride_h,
                  double stride_w, T* out);
// weights: (wx, wy, ww, wh). encode: targets of gt against proposals, both [n, 4].
template <typename T>
void encode_boxes(const T* gt, const T* proposals, int64_t n, const double* weights, T* out);
// codes [n, 4k] against boxes [n, 4] -> out [n, 4k]; dw, dh clamped at clip.
template <typename T>
void decode_boxes(const T* codes, const T* boxes, int64_t n, int64_t k, const double* weights,
                  double clip, T* out);
template <typename T>
void clip_boxes(const T* boxes, int64_t n, double height, double width, T* out);
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
// The clustering step alone (the GPU path's kernel; fastdet::cpu's copy checks the GPU path's
// torch glue on the CPU): boxes [k, 4] filtered, clipped and sorted by (label, decreasing
// weighted score ws, input position pos), w their model weights, label segments seg [nseg + 1].
// Cluster c of segment s goes to row seg[s] + c: fused box, ensemble-boxes' stored score and
// weight, box count, first box's position; ncl [nseg] the cluster counts; assign [k] each box's
// cluster (c, within its segment).
void wbf_cluster(const double* boxes, const double* ws, const double* w, const int64_t* pos,
                 const int64_t* seg, int64_t nseg, double iou_thr, int conf_type, double* out_boxes,
                 double* out_s, double* out_w, int64_t* out_count, int64_t* out_first, int64_t* ncl,
                 int64_t* assign);
}  // namespace cpu

namespace cuda {
// stream is a cudaStream_t; device is the CUDA device index of every pointer.
bool available();
int device_count();
const char* version();  // runtime version, e.g. "13.0"
const char* archs();    // architectures compiled in, e.g. "75;80;86;89;90;100;120"

template <typename T> void box_area(const T* boxes, int64_t n, T* out, int device, void* stream);
template <typename T>
void box_iou(const T* a, int64_t n, const T* b, int64_t m, T* out, int device, void* stream);
template <typename T>
void generalized_box_iou(const T* a, int64_t n, const T* b, int64_t m, T* out, int device,
                         void* stream);
template <typename T>
void pairwise_iou(IouKind kind, const T* a, const T* b, int64_t batch, int64_t n, int64_t m,
                  double eps, T* out, int device, void* stream);

// NMS family: the caller allocates `workspace` of nms_workspace_bytes(n) (or the batched /
// soft variant); the call synchronises the stream once, to read the kept count.
size_t nms_workspace_bytes(int64_t n);
template <typename T>
int64_t nms(const T* boxes, const T* scores, int64_t n, double iou_threshold, int64_t* keep,
            void* workspace, size_t workspace_bytes, int device, void* stream);
size_t batched_nms_workspace_bytes(int64_t n);
template <typename T>
int64_t batched_nms(const T* boxes, const T* scores, const int64_t* idxs, int64_t n,
                    double iou_threshold, int64_t* keep, void* workspace, size_t workspace_bytes,
                    int device, void* stream);
size_t soft_nms_workspace_bytes(int64_t n);
template <typename T>
int64_t soft_nms(const T* boxes, const T* scores, int64_t n, double iou_threshold, double sigma,
                 double score_threshold, int method, int64_t* keep, T* out_scores, void* workspace,
                 size_t workspace_bytes, int device, void* stream);

template <typename T>
void roi_align_forward(const T* input, int64_t N, int64_t C, int64_t H, int64_t W, const T* rois,
                       int64_t K, int64_t PH, int64_t PW, double spatial_scale,
                       int64_t sampling_ratio, bool aligned, T* out, int device, void* stream);
// deterministic: fixed-point accumulation (bit-identical run to run) in `workspace` of
// roi_align_backward_workspace_bytes(...); otherwise floating-point atomics, workspace unused:
// one per bilinear tap, or with `shared` one per touched pixel after summing each roi in shared
// memory (deterministic wins).
size_t roi_align_backward_workspace_bytes(int64_t N, int64_t C, int64_t H, int64_t W,
                                          bool deterministic);
template <typename T>
void roi_align_backward(const T* grad_out, int64_t N, int64_t C, int64_t H, int64_t W,
                        const T* rois, int64_t K, int64_t PH, int64_t PW, double spatial_scale,
                        int64_t sampling_ratio, bool aligned, T* grad_input, bool deterministic,
                        bool shared, void* workspace, size_t workspace_bytes, int device,
                        void* stream);
template <typename T>
void roi_pool_forward(const T* input, int64_t N, int64_t C, int64_t H, int64_t W, const T* rois,
                      int64_t K, int64_t PH, int64_t PW, double spatial_scale, T* out,
                      int32_t* argmax, int device, void* stream);
// Float atomics, as torchvision: sums where bins share a maximum vary in the last bits.
template <typename T>
void roi_pool_backward(const T* grad_out, const int32_t* argmax, const T* rois, int64_t K,
                       int64_t N, int64_t C, int64_t H, int64_t W, int64_t PH, int64_t PW,
                       T* grad_input, int device, void* stream);

template <typename T>
void grid_anchors(const T* base, int64_t A, int64_t gh, int64_t gw, double stride_h,
                  double stride_w, T* out, int device, void* stream);
template <typename T>
void encode_boxes(const T* gt, const T* proposals, int64_t n, const double* weights, T* out,
                  int device, void* stream);
template <typename T>
void decode_boxes(const T* codes, const T* boxes, int64_t n, int64_t k, const double* weights,
                  double clip, T* out, int device, void* stream);
template <typename T>
void clip_boxes(const T* boxes, int64_t n, double height, double width, T* out, int device,
                void* stream);
void wbf_cluster(const double* boxes, const double* ws, const double* w, const int64_t* pos,
                 const int64_t* seg, int64_t nseg, double iou_thr, int conf_type, double* out_boxes,
                 double* out_s, double* out_w, int64_t* out_count, int64_t* out_first, int64_t* ncl,
                 int64_t* assign, void* workspace, size_t workspace_bytes, int device,
                 void* stream);
size_t wbf_cluster_workspace_bytes(int64_t k);
}  // namespace cuda

}  // namespace fastdet

// Rotated boxes [n, 5]: (cx, cy, w, h, angle in degrees, counter-clockwise on an image whose y
// axis points down); the geometry is fastdet/rotated.h. NMS rules as nms / batched_nms above.
namespace fastdet::cpu {
template <typename T> void box_iou_rotated(const T* a, int64_t n, const T* b, int64_t m, T* out);
template <typename T>
int64_t nms_rotated(const T* boxes, const T* scores, int64_t n, double iou_threshold,
                    int64_t* keep);
template <typename T>
int64_t batched_nms_rotated(const T* boxes, const T* scores, const int64_t* idxs, int64_t n,
                            double iou_threshold, int64_t* keep);
}  // namespace fastdet::cpu

namespace fastdet::cuda {
template <typename T>
void box_iou_rotated(const T* a, int64_t n, const T* b, int64_t m, T* out, int device,
                     void* stream);
// workspace: nms_rotated_workspace_bytes(n, batched) bytes; the call synchronises once.
size_t nms_rotated_workspace_bytes(int64_t n, bool batched);
template <typename T>
int64_t nms_rotated(const T* boxes, const T* scores, const int64_t* idxs, int64_t n,
                    double iou_threshold, int64_t* keep, void* workspace, size_t workspace_bytes,
                    int device, void* stream);
}  // namespace fastdet::cuda

// Mask pasting (fastdet/paste.h: torchvision's paste_masks_in_image rules). masks [K, M, M] of T,
// boxes [K, 4] of B (the box arithmetic is done in B, as torchvision does it in the boxes'
// dtype); out is overwritten entirely. paste_masks: out [K, H, W] probabilities;
// paste_masks_binary: out [K, H, W] of 0/1 (prob > threshold). masks_to_labels: out int32
// [H, W], pixel = k + 1 of the first mask k in `order` [K] whose prob > threshold, else 0
// (order: decreasing score, ties lower index first); boxes null: masks are [K, H, W]
// probabilities (M unused).
namespace fastdet::cpu {
template <typename T, typename B>
void paste_masks(const T* masks, int64_t K, int64_t M, const B* boxes, int64_t padding, int64_t H,
                 int64_t W, T* out);
template <typename T, typename B>
void paste_masks_binary(const T* masks, int64_t K, int64_t M, const B* boxes, int64_t padding,
                        int64_t H, int64_t W, double threshold, uint8_t* out);
template <typename T, typename B>
void masks_to_labels(const T* masks, int64_t K, int64_t M, const B* boxes, const int64_t* order,
                     int64_t padding, int64_t H, int64_t W, double threshold, int32_t* out);
}  // namespace fastdet::cpu

namespace fastdet::cuda {
template <typename T, typename B>
void paste_masks(const T* masks, int64_t K, int64_t M, const B* boxes, int64_t padding, int64_t H,
                 int64_t W, T* out, int device, void* stream);
template <typename T, typename B>
void paste_masks_binary(const T* masks, int64_t K, int64_t M, const B* boxes, int64_t padding,
                        int64_t H, int64_t W, double threshold, uint8_t* out, int device,
                        void* stream);
template <typename T, typename B>
void masks_to_labels(const T* masks, int64_t K, int64_t M, const B* boxes, const int64_t* order,
                     int64_t padding, int64_t H, int64_t W, double threshold, int32_t* out,
                     int device, void* stream);
}  // namespace fastdet::cuda
