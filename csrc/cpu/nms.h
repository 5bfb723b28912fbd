// The NMS driver of nms.cpp and rotated.cpp: boxes in decreasing score (ties: lower index first),
// then one greedy pass, or one per class. Only the greedy pass depends on the box kind.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "parallel.h"
#include "sort.h"

namespace fastdet::cpu {

// `order` regrouped by class, keeping the score order within each class: a counting sort when
// the labels span a small range (the usual 0..C-1), a stable comparison sort otherwise.
inline std::vector<int64_t> group_by_class(const std::vector<int64_t>& order, const int64_t* idxs) {
  const int64_t n = int64_t(order.size());
  const auto [lo, hi] = std::minmax_element(idxs, idxs + n);
  if (double(*hi) - double(*lo) >= double(4 * n + 1024)) {
    std::vector<int64_t> out(order);
    std::stable_sort(out.begin(), out.end(),
                     [&](int64_t a, int64_t b) { return idxs[a] < idxs[b]; });
    return out;
  }
  std::vector<int64_t> pos(size_t(*hi - *lo) + 2, 0), out(n);
  for (int64_t k = 0; k < n; ++k) ++pos[size_t(idxs[k] - *lo) + 1];
  for (size_t c = 1; c < pos.size(); ++c) pos[c] += pos[c - 1];
  for (int64_t k = 0; k < n; ++k) out[pos[size_t(idxs[order[k]] - *lo)]++] = order[k];
  return out;
}

// Greedy NMS of n boxes by `scores`, per class idxs unless idxs is null; kept indices into keep
// in decreasing score, returns their count. greedy(boxes, order, count, t, kept) is the pass over
// the boxes order[0..count) in that order: it writes the kept ones and returns how many.
// Classes are independent: the score order grouped by class (stable), one pass per class in
// parallel (a thread per `grain` boxes), the kept indices merged back into one score order.
template <typename T, typename Greedy>
int64_t greedy_nms(Greedy greedy, const T* boxes, const T* scores, const int64_t* idxs, int64_t n,
                   double t, int64_t* keep, int64_t grain) {
  if (n == 0) return 0;
  std::vector<int64_t> order(n);
  argsort_descending(scores, n, order.data());
  if (!idxs) return greedy(boxes, order.data(), n, t, keep);
  std::vector<int64_t> rank(n);
  for (int64_t k = 0; k < n; ++k) rank[order[k]] = k;
  std::vector<int64_t> by_class = group_by_class(order, idxs);
  std::vector<int64_t> starts{0};
  for (int64_t k = 1; k < n; ++k)
    if (idxs[by_class[k]] != idxs[by_class[k - 1]]) starts.push_back(k);
  starts.push_back(n);
  const int64_t groups = int64_t(starts.size()) - 1;
  std::vector<int64_t> kept(n), counts(groups);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads_for(n, grain))
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t s = starts[g];
    counts[g] = greedy(boxes, by_class.data() + s, starts[g + 1] - s, t, kept.data() + s);
  }
  // Flag kept boxes by score rank, then read them back in rank order.
  std::vector<uint8_t> flag(n, 0);
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t k = 0; k < counts[g]; ++k) flag[rank[kept[starts[g] + k]]] = 1;
  int64_t count = 0;
  for (int64_t k = 0; k < n; ++k)
    if (flag[k]) keep[count++] = order[k];
  return count;
}

}  // namespace fastdet::cpu
