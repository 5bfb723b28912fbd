// roi_pool forward and backward with torchvision.ops.roi_pool's arithmetic: RoI corners rounded
// (half away from zero) after scaling, in T; malformed RoIs forced to 1x1; bin p spans
// [floor(p * bin), ceil((p + 1) * bin)) offset by the RoI start and clipped to the map; an empty
// bin gives 0 and argmax -1; ties keep the first maximum in row-major order. argmax may be null
// (inference wants no backward): only `out` is written then.
//
// Forward: a task is one (RoI, channel) pair, whose bins read rows of one plane. Backward: a task
// owns a block of channels of every image and adds its RoIs' gradients in (RoI, bin) order, so
// the sums are race-free and bit-identical for any thread count.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "parallel.h"

namespace fastdet::cpu {
namespace {

// Rounded, scaled coordinate, clamped so that NaN or huge values cannot overflow the integers.
template <typename T> int64_t scaled(T v, T scale) {
  T r = std::round(v * scale);
  const T lim = T(1 << 30);
  if (!(r >= -lim)) return -(int64_t(1) << 30);  // NaN too
  return r > lim ? int64_t(1) << 30 : int64_t(r);
}

// Bin bounds [lo, hi) along one axis of extent `size`, for each of P bins of a RoI.
template <typename T>
void bins(T start_coord, T end_coord, T scale, int64_t P, int64_t size, int64_t* lo, int64_t* hi) {
  const int64_t start = scaled(start_coord, scale), end = scaled(end_coord, scale);
  const T bin = T(std::max<int64_t>(end - start + 1, 1)) / T(P);
  for (int64_t p = 0; p < P; ++p) {
    const int64_t a = int64_t(std::floor(T(p) * bin)) + start;
    const int64_t b = int64_t(std::ceil(T(p + 1) * bin)) + start;
    lo[p] = std::clamp<int64_t>(a, 0, size);
    hi[p] = std::clamp<int64_t>(b, 0, size);
  }
}

}  // namespace

template <typename T>
void roi_pool_forward(const T* input, int64_t N, int64_t C, int64_t H, int64_t W, const T* rois,
                      int64_t K, int64_t PH, int64_t PW, double spatial_scale, T* out,
                      int32_t* argmax) {
  if (K <= 0 || C <= 0) return;
  const T scale = T(spatial_scale);
  // Bin bounds per RoI, computed once for all channels: [K][PH] rows and [K][PW] columns.
  std::vector<int64_t> h0(K * PH), h1(K * PH), w0(K * PW), w1(K * PW), batch(K);
  for (int64_t k = 0; k < K; ++k) {
    const T* r = rois + 5 * k;
    batch[k] = int64_t(r[0]);
    bins(r[2], r[4], scale, PH, H, &h0[k * PH], &h1[k * PH]);
    bins(r[1], r[3], scale, PW, W, &w0[k * PW], &w1[k * PW]);
  }
  const int64_t tasks = K * C, per = PH * PW;
#pragma omp parallel for schedule(dynamic, 4) num_threads(threads_for(tasks * per * 16, 1 << 14))
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t k = t / C, c = t % C, b = batch[k];
    T* o = out + t * per;
    int32_t* am = argmax ? argmax + t * per : nullptr;
    if (b < 0 || b >= N) {  // the Python layer refuses these on the CPU; never read outside
      std::fill(o, o + per, T(0));
      if (am) std::fill(am, am + per, int32_t(-1));
      continue;
    }
    const T* plane = input + (b * C + c) * H * W;
    for (int64_t ph = 0; ph < PH; ++ph) {
      const int64_t ya = h0[k * PH + ph], yb = h1[k * PH + ph];
      for (int64_t pw = 0; pw < PW; ++pw) {
        const int64_t xa = w0[k * PW + pw], xb = w1[k * PW + pw];
        const bool empty = yb <= ya || xb <= xa;
        T best = empty ? T(0) : std::numeric_limits<T>::lowest();
        int64_t at = -1;
        for (int64_t y = ya; y < yb; ++y) {
          const T* row = plane + y * W;
          for (int64_t x = xa; x < xb; ++x)
            if (row[x] > best) {
              best = row[x];
              at = y * W + x;
            }
        }
        o[ph * PW + pw] = best;
        if (am) am[ph * PW + pw] = int32_t(at);
      }
    }
  }
}

template <typename T>
void roi_pool_backward(const T* grad_out, const int32_t* argmax, const T* rois, int64_t K,
                       int64_t N, int64_t C, int64_t H, int64_t W, int64_t PH, int64_t PW,
                       T* grad_input) {
  const int64_t plane = H * W, per = PH * PW;
  std::fill(grad_input, grad_input + N * C * plane, T(0));
  if (K <= 0 || C <= 0 || plane == 0) return;
  // A task owns a block of channels and walks the RoIs in order, reading each RoI's rows of
  // grad_out for the block contiguously (a channel at a time would stride C * PH * PW apart).
  const int nt = threads_for(K * C * per, 1 << 14);
  const int64_t block = std::max<int64_t>(1, std::min<int64_t>(64, C / (4 * int64_t(nt))));
  const int64_t blocks = (C + block - 1) / block;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
  for (int64_t cb = 0; cb < blocks; ++cb) {
    const int64_t c0 = cb * block, c1 = std::min(C, c0 + block);
    for (int64_t k = 0; k < K; ++k) {
      const int64_t b = int64_t(rois[5 * k]);
      if (b < 0 || b >= N) continue;
      for (int64_t c = c0; c < c1; ++c) {
        T* g = grad_input + (b * C + c) * plane;
        const T* go = grad_out + (k * C + c) * per;
        const int32_t* am = argmax + (k * C + c) * per;
        for (int64_t i = 0; i < per; ++i)
          if (am[i] >= 0) g[am[i]] += go[i];
      }
    }
  }
}

#define FASTDET_INSTANTIATE(T)                                                              \
  template void roi_pool_forward<T>(const T*, int64_t, int64_t, int64_t, int64_t, const T*, \
                                    int64_t, int64_t, int64_t, double, T*, int32_t*);       \
  template void roi_pool_backward<T>(const T*, const int32_t*, const T*, int64_t, int64_t,  \
                                     int64_t, int64_t, int64_t, int64_t, int64_t, T*);
FASTDET_INSTANTIATE(float)
FASTDET_INSTANTIATE(double)

}  // namespace fastdet::cpu
