// clip_boxes and remove_small_boxes: cheap per-box passes, kept beside the kernels so numpy
// inputs need no torch.
#include <algorithm>

#include "parallel.h"

namespace fastdet::cpu {

template <typename T>
void clip_boxes(const T* boxes, int64_t n, double height, double width, T* out) {
  const T h = T(height), w = T(width);
#pragma omp parallel for schedule(static) num_threads(threads_for(n, 1 << 16))
  for (int64_t i = 0; i < n; ++i) {
    out[4 * i] = std::clamp(boxes[4 * i], T(0), w);
    out[4 * i + 1] = std::clamp(boxes[4 * i + 1], T(0), h);
    out[4 * i + 2] = std::clamp(boxes[4 * i + 2], T(0), w);
    out[4 * i + 3] = std::clamp(boxes[4 * i + 3], T(0), h);
  }
}

template <typename T>
int64_t remove_small_boxes(const T* boxes, int64_t n, double min_size, int64_t* keep) {
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) {
    const T* b = boxes + 4 * i;
    if (b[2] - b[0] >= T(min_size) && b[3] - b[1] >= T(min_size)) keep[count++] = i;
  }
  return count;
}

template void clip_boxes<float>(const float*, int64_t, double, double, float*);
template void clip_boxes<double>(const double*, int64_t, double, double, double*);
template int64_t remove_small_boxes<float>(const float*, int64_t, double, int64_t*);
template int64_t remove_small_boxes<double>(const double*, int64_t, double, int64_t*);

}  // namespace fastdet::cpu
