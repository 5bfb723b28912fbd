// soft_nms (Bodla et al., 2017): instead of dropping overlapping boxes, decay their scores.
// Each step takes the best remaining box and decays the rest in the same pass that finds the
// next best: O(n * selected) IoUs, no sort. Floor: the same pass count; ~n^2/2 IoUs when most
// boxes survive the score threshold.
#include <cmath>
#include <vector>

#include "fastdet/box.h"
#include "parallel.h"

namespace fastdet::cpu {

template <typename T>
int64_t soft_nms(const T* boxes, const T* scores, int64_t n, double iou_threshold, double sigma,
                 double score_threshold, int method, int64_t* keep, T* out_scores) {
  // Live boxes, compacted as they die so each pass touches only survivors.
  std::vector<int64_t> live;
  std::vector<T> s;
  live.reserve(n);
  s.reserve(n);
  for (int64_t i = 0; i < n; ++i)
    if (double(scores[i]) >= score_threshold) {
      live.push_back(i);
      s.push_back(scores[i]);
    }
  auto best_of = [&]() {  // highest score, lowest index on ties
    int64_t b = 0;
    for (int64_t k = 1; k < int64_t(live.size()); ++k)
      if (s[k] > s[b] || (s[k] == s[b] && live[k] < live[b])) b = k;
    return b;
  };
  int64_t count = 0;
  while (!live.empty()) {
    int64_t b = best_of();
    const int64_t bi = live[b];
    keep[count] = bi;
    out_scores[count++] = s[b];
    const T* bb = boxes + 4 * bi;
    int64_t w = 0;
    for (int64_t k = 0; k < int64_t(live.size()); ++k) {
      if (k == b) continue;
      double o = iou(bb, boxes + 4 * live[k]);
      double f =
          method == kLinear ? (o > iou_threshold ? 1.0 - o : 1.0) : std::exp(-(o * o) / sigma);
      T ns = T(double(s[k]) * f);
      if (double(ns) < score_threshold) continue;
      live[w] = live[k];
      s[w++] = ns;
    }
    live.resize(w);
    s.resize(w);
  }
  return count;
}

#define FASTDET_INSTANTIATE(T)                                                                     \
  template int64_t soft_nms<T>(const T*, const T*, int64_t, double, double, double, int, int64_t*, \
                               T*);
FASTDET_INSTANTIATE(float)
FASTDET_INSTANTIATE(double)

}  // namespace fastdet::cpu
