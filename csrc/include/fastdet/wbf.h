// Weighted boxes fusion (Solovyev et al., 2021) arithmetic shared by the CPU and CUDA kernels,
// written to round as ensemble-boxes does (numpy >= 2): IoUs and sums in double, the running
// fused box in float32 (its get_weighted_box accumulates into a float32 array).
#pragma once
#include <stdint.h>

#include "fastdet/box.h"

namespace fastdet::wbf {

// ensemble-boxes' IoU (its bb_iou_array): no clamping of the areas, union = (a + b) - inter.
// A non-positive union (only degenerate fused boxes) gives 0, where numpy gives inf or NaN.
FASTDET_HD double iou(const double* c, const double* b) {
  const double xa = fmax_(c[0], b[0]), ya = fmax_(c[1], b[1]);
  const double xb = fmin_(c[2], b[2]), yb = fmin_(c[3], b[3]);
  const double inter = fmax_(xb - xa, 0.0) * fmax_(yb - ya, 0.0);
  const double uni = ((c[2] - c[0]) * (c[3] - c[1]) + (b[2] - b[0]) * (b[3] - b[1])) - inter;
  return uni > 0.0 ? inter / uni : 0.0;
}

// One cluster: the boxes fused so far and the row ensemble-boxes matches new boxes against.
struct Cluster {
  double box[4];    // the running fused box (a lone box's own coordinates)
  float acc[4];     // sum of score * coordinate, rounded to float32 after each addition
  double plain[4];  // sum of coordinates: the fused box when the scores sum to 0
  double conf;      // sum of weighted scores
  double wsum;      // sum of model weights
  double smax;      // largest weighted score
  int64_t count;
  int64_t first;  // input position of the cluster's first box
};

FASTDET_HD void start(Cluster& c, const double* b, double ws, double w, int64_t pos) {
  for (int k = 0; k < 4; ++k) {
    c.box[k] = b[k];
    c.acc[k] = float(ws * b[k]);  // 0 + ws * b, exactly its first float32 addition
    c.plain[k] = b[k];
  }
  c.conf = ws;
  c.wsum = w;
  c.smax = ws;
  c.count = 1;
  c.first = pos;
}

// Adds box b and recomputes the fused box: float32(float32 sum / conf), the division in double
// (numpy divides a float32 array by a float64 scalar in float64 and stores float32).
FASTDET_HD void join(Cluster& c, const double* b, double ws, double w) {
  c.conf += ws;
  c.wsum += w;
  c.smax = fmax_(c.smax, ws);
  ++c.count;
  for (int k = 0; k < 4; ++k) {
    c.acc[k] = float(double(c.acc[k]) + ws * b[k]);
    c.plain[k] += b[k];
    // ensemble-boxes divides by 0 here (NaN boxes); the plain mean is the limit of equal scores.
    c.box[k] = c.conf != 0.0 ? double(float(double(c.acc[k]) / c.conf))
                             : double(float(c.plain[k] / double(c.count)));
  }
}

enum ConfType : int { kAvg = 0, kMax = 1, kBoxAndModelAvg = 2, kAbsentModelAwareAvg = 3 };

// ensemble-boxes' row after clustering: a lone box keeps its own weighted score and weight, a
// fused cluster float32 ones (get_weighted_box's float32 row).
FASTDET_HD double stored_score(const Cluster& c, int conf_type) {
  if (c.count == 1) return c.conf;
  return conf_type == kMax ? double(float(c.smax)) : double(float(c.conf / double(c.count)));
}
FASTDET_HD double stored_weight(const Cluster& c) {
  return c.count == 1 ? c.wsum : double(float(c.wsum));
}

// The cluster's final score. model_wsum: sum of the weights of the distinct models in the
// cluster; absent_wsum: of the models absent from it; weight_sum, weight_max: of all models.
FASTDET_HD double final_score(const Cluster& c, int conf_type, bool allows_overflow,
                              int64_t n_models, double model_wsum, double absent_wsum,
                              double weight_sum, double weight_max) {
  const double s = stored_score(c, conf_type), w = stored_weight(c);
  const double n = double(c.count);
  switch (conf_type) {
    case kBoxAndModelAvg:
      return s * n / w * model_wsum / weight_sum;
    case kAbsentModelAwareAvg:
      return s * n / (w + absent_wsum);
    case kMax:
      return s / weight_max;
    default:
      return s * double(allows_overflow || c.count < n_models ? c.count : n_models) / weight_sum;
  }
}

}  // namespace fastdet::wbf
