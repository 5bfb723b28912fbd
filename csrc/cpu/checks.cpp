// Input checks the Python layer runs before a kernel (NaN / inf coordinates must raise).
#include <cmath>

#include "parallel.h"

namespace fastdet::cpu {

template <typename T> int64_t count_nonfinite(const T* x, int64_t n) {
  int64_t bad = 0;
#pragma omp parallel for reduction(+ : bad) num_threads(threads_for(n, 1 << 18))
  for (int64_t i = 0; i < n; ++i) bad += !std::isfinite(x[i]);
  return bad;
}

// The IoU kernels' areas and unions overflow for coordinates beyond sqrt(max / 8); this check
// catches those and NaN / inf (which fail the comparison) for the price of the finite check.
template <typename T> int64_t count_beyond(const T* x, int64_t n, double limit) {
  const T lim = static_cast<T>(limit);
  int64_t bad = 0;
#pragma omp parallel for reduction(+ : bad) num_threads(threads_for(n, 1 << 18))
  for (int64_t i = 0; i < n; ++i) bad += !(std::fabs(x[i]) <= lim);
  return bad;
}

template int64_t count_nonfinite<float>(const float*, int64_t);
template int64_t count_nonfinite<double>(const double*, int64_t);
template int64_t count_beyond<float>(const float*, int64_t, double);
template int64_t count_beyond<double>(const double*, int64_t, double);

}  // namespace fastdet::cpu
