// The kernels of both backends, each declared once. ops.h includes this file into namespace cpu
// and into namespace cuda, defining FASTDET_CUDA, FASTDET_WORKSPACE and FASTDET_STREAM (the CUDA
// kernels' extra arguments) for each; so no include guard, and nothing included here.
#ifndef FASTDET_CUDA
#error "include fastdet/ops.h, not fastdet/kernels.h"
#endif

template <typename T> void box_area(const T* boxes, int64_t n, T* out FASTDET_STREAM);
template <typename T>
void box_iou(const T* a, int64_t n, const T* b, int64_t m, T* out FASTDET_STREAM);
template <typename T>
void generalized_box_iou(const T* a, int64_t n, const T* b, int64_t m, T* out FASTDET_STREAM);
// batch independent pairs of box sets: a [batch, n, 4], b [batch, m, 4] -> out [batch, n, m].
// eps: DIoU's and CIoU's (torchvision's default 1e-7); ignored by IoU and GIoU.
template <typename T>
void pairwise_iou(IouKind kind, const T* a, const T* b, int64_t batch, int64_t n, int64_t m,
                  double eps, T* out FASTDET_STREAM);

// NMS family. keep: room for n indices, written in decreasing score (ties: lower index first).
// The CUDA calls synchronise the stream once, to read the kept count.
template <typename T>
int64_t nms(const T* boxes, const T* scores, int64_t n, double iou_threshold,
            int64_t* keep FASTDET_WORKSPACE FASTDET_STREAM);
template <typename T>
int64_t batched_nms(const T* boxes, const T* scores, const int64_t* idxs, int64_t n,
                    double iou_threshold, int64_t* keep FASTDET_WORKSPACE FASTDET_STREAM);
// Containment suppression, greedy like batched_nms: a box is dropped when more than `fraction`
// of its area lies inside a kept, higher-scoring box of the same idxs (a zero-area box never is).
template <typename T>
int64_t suppress_contained(const T* boxes, const T* scores, const int64_t* idxs, int64_t n,
                           double fraction, int64_t* keep FASTDET_WORKSPACE FASTDET_STREAM);
// keep and out_scores: room for n; entries in selection order (decreasing decayed score).
template <typename T>
int64_t soft_nms(const T* boxes, const T* scores, int64_t n, double iou_threshold, double sigma,
                 double score_threshold, int method, int64_t* keep,
                 T* out_scores FASTDET_WORKSPACE FASTDET_STREAM);

// input [N, C, H, W]; rois [K, 5] (batch index, x1, y1, x2, y2); out [K, C, PH, PW].
template <typename T>
void roi_align_forward(const T* input, int64_t N, int64_t C, int64_t H, int64_t W, const T* rois,
                       int64_t K, int64_t PH, int64_t PW, double spatial_scale,
                       int64_t sampling_ratio, bool aligned, T* out FASTDET_STREAM);
// grad_input [N, C, H, W] is overwritten (not accumulated into). CUDA: deterministic:
// fixed-point accumulation (bit-identical run to run) in the workspace; otherwise floating-point
// atomics, workspace unused: one per bilinear tap, or with `shared` one per touched pixel after
// summing each roi in shared memory (deterministic wins).
template <typename T>
void roi_align_backward(const T* grad_out, int64_t N, int64_t C, int64_t H, int64_t W,
                        const T* rois, int64_t K, int64_t PH, int64_t PW, double spatial_scale,
                        int64_t sampling_ratio, bool aligned,
                        T* grad_input FASTDET_CUDA(, bool deterministic, bool shared)
                            FASTDET_WORKSPACE FASTDET_STREAM);
// RoIPool (Fast R-CNN): out [K, C, PH, PW] and argmax [K, C, PH, PW] (index h * W + w of the
// maximum within its plane, -1 for an empty bin, whose output is 0). Backward overwrites
// grad_input [N, C, H, W]: deterministic on the CPU (threads own channels); float atomics on
// CUDA, as torchvision (sums where bins share a maximum vary in the last bits).
template <typename T>
void roi_pool_forward(const T* input, int64_t N, int64_t C, int64_t H, int64_t W, const T* rois,
                      int64_t K, int64_t PH, int64_t PW, double spatial_scale, T* out,
                      int32_t* argmax FASTDET_STREAM);
template <typename T>
void roi_pool_backward(const T* grad_out, const int32_t* argmax, const T* rois, int64_t K,
                       int64_t N, int64_t C, int64_t H, int64_t W, int64_t PH, int64_t PW,
                       T* grad_input FASTDET_STREAM);

// One feature level: out[(y * gw + x) * A + a] = base[a] + (x*sw, y*sh, x*sw, y*sh).
template <typename T>
void grid_anchors(const T* base, int64_t A, int64_t gh, int64_t gw, double stride_h,
                  double stride_w, T* out FASTDET_STREAM);
// weights: (wx, wy, ww, wh). encode: targets of gt against proposals, both [n, 4].
template <typename T>
void encode_boxes(const T* gt, const T* proposals, int64_t n, const double* weights,
                  T* out FASTDET_STREAM);
// codes [n, 4k] against boxes [n, 4] -> out [n, 4k]; dw, dh clamped at clip.
template <typename T>
void decode_boxes(const T* codes, const T* boxes, int64_t n, int64_t k, const double* weights,
                  double clip, T* out FASTDET_STREAM);
template <typename T>
void clip_boxes(const T* boxes, int64_t n, double height, double width, T* out FASTDET_STREAM);

// Weighted boxes fusion's clustering step (the GPU path's kernel; fastdet::cpu's copy checks the
// GPU path's torch glue on the CPU): boxes [k, 4] filtered, clipped and sorted by (label,
// decreasing weighted score ws, input position pos), w their model weights, label segments seg
// [nseg + 1]. Cluster c of segment s goes to row seg[s] + c: fused box, ensemble-boxes' stored
// score and weight, box count, first box's position; ncl [nseg] the cluster counts; assign [k]
// each box's cluster (c, within its segment).
void wbf_cluster(const double* boxes, const double* ws, const double* w, const int64_t* pos,
                 const int64_t* seg, int64_t nseg, double iou_thr, int conf_type, double* out_boxes,
                 double* out_s, double* out_w, int64_t* out_count, int64_t* out_first, int64_t* ncl,
                 int64_t* assign FASTDET_WORKSPACE FASTDET_STREAM);

// Rotated boxes [n, 5]: (cx, cy, w, h, angle in degrees, counter-clockwise on an image whose y
// axis points down); the geometry is fastdet/rotated.h. nms_rotated: the NMS rules above, per
// int64 category idxs unless idxs is null.
template <typename T>
void box_iou_rotated(const T* a, int64_t n, const T* b, int64_t m, T* out FASTDET_STREAM);
template <typename T>
int64_t nms_rotated(const T* boxes, const T* scores, const int64_t* idxs, int64_t n,
                    double iou_threshold, int64_t* keep FASTDET_WORKSPACE FASTDET_STREAM);

// Mask pasting (fastdet/paste.h: torchvision's paste_masks_in_image rules). masks [K, M, M] of T,
// boxes [K, 4] of B (the box arithmetic is done in B, as torchvision does it in the boxes'
// dtype); out is overwritten entirely. paste_masks: out [K, H, W] probabilities;
// paste_masks_binary: out [K, H, W] of 0/1 (prob > threshold). masks_to_labels: out int32
// [H, W], pixel = k + 1 of the first mask k in `order` [K] whose prob > threshold, else 0
// (order: decreasing score, ties lower index first); boxes null: masks are [K, H, W]
// probabilities (M unused).
template <typename T, typename B>
void paste_masks(const T* masks, int64_t K, int64_t M, const B* boxes, int64_t padding, int64_t H,
                 int64_t W, T* out FASTDET_STREAM);
template <typename T, typename B>
void paste_masks_binary(const T* masks, int64_t K, int64_t M, const B* boxes, int64_t padding,
                        int64_t H, int64_t W, double threshold, uint8_t* out FASTDET_STREAM);
template <typename T, typename B>
void masks_to_labels(const T* masks, int64_t K, int64_t M, const B* boxes, const int64_t* order,
                     int64_t padding, int64_t H, int64_t W, double threshold,
                     int32_t* out FASTDET_STREAM);
