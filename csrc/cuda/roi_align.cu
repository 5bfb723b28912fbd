// roi_align forward and backward with torchvision's semantics: aligned half-pixel offset,
// malformed rois forced to 1x1 when !aligned, adaptive sampling grid ceil(roi_size / pooled),
// bilinear taps clamped at the border, samples outside [-1, size] contribute 0, average over
// max(grid_h * grid_w, 1) samples (grid_h * grid_w in backward, as torchvision).
//
// One block per (roi, channel tile). Taps are separable: the y taps depend on (ph, iy) only and
// the x taps on (pw, ix) only, so the block computes them once into shared memory (index pair +
// weights per axis, PH*grid_h + PW*grid_w entries) and every channel of the tile reuses them.
// Threads run over (c, ph, pw), pw fastest, so neighbouring threads read neighbouring pixels.
// A roi whose taps exceed kTapCap computes them on the fly instead (same arithmetic).
// Floors: forward, K*C*PH*PW outputs each gathering grid_h*grid_w*4 input values (L1/L2
// hits for the most part) and one write; backward, the same count of scattered atomic adds
// after zeroing grad_input (N*C*H*W*sizeof(T)).
//
// Shared backward (the default from Python): sums each roi over its footprint in shared memory
// first, then one atomic per touched pixel; see "shared backward" below.
//
// Deterministic backward: float atomics make the sum order (and bits) vary run to run, so the
// contributions are summed as int64 fixed point instead (integer adds commute exactly):
// scale = 2^e with K*PH*PW*max|grad_out|*scale < 2^62 (a roi's weights per bin sum to <= 1,
// so no element can overflow), contribution -> llrint(c * scale), wrap-around uint64 atomicAdd,
// then grad_input = acc / scale. Workspace: an 8-byte max slot at 0, the accumulator at 256.
// Resolution is max|grad_out| * K*PH*PW * 2^-62 absolute.
#include <algorithm>
#include <cmath>

#include "common.cuh"
#include "fastdet/ops.h"

namespace fastdet::cuda {
namespace {
using namespace detail;

constexpr int kRoiThreads = 256;
constexpr int kTapCap = 1024;      // taps (both axes) a block keeps in shared memory
constexpr int kOutPerBlock = 512;  // (channel, bin) outputs a block aims for
constexpr size_t kAccOffset = 256;
using Acc = unsigned long long;

template <typename T> struct Tap {
  int lo, hi;  // lo < 0: the sample is outside the map and contributes 0
  T l, h;      // weights of hi and lo
};

template <typename T> struct Roi {
  int batch;
  T start_h, start_w, bin_h, bin_w;
  int gh, gw;  // sampling grid per bin; <= 0 means no samples
};

template <typename T>
__device__ Roi<T> load_roi(const T* rois, int64_t k, T scale, bool aligned, int PH, int PW,
                           int sr) {
  const T* r = rois + k * 5;
  Roi<T> o;
  o.batch = int(r[0]);
  const T off = aligned ? T(0.5) : T(0);
  o.start_w = r[1] * scale - off;
  o.start_h = r[2] * scale - off;
  const T end_w = r[3] * scale - off, end_h = r[4] * scale - off;
  T rw = end_w - o.start_w, rh = end_h - o.start_h;
  if (!aligned) {  // malformed rois become 1x1
    rw = max(rw, T(1));
    rh = max(rh, T(1));
  }
  o.bin_h = rh / T(PH);
  o.bin_w = rw / T(PW);
  o.gh = sr > 0 ? sr : int(ceil(rh / T(PH)));
  o.gw = sr > 0 ? sr : int(ceil(rw / T(PW)));
  return o;
}

// Sample i of bin p along one axis of extent `size`.
template <typename T>
__device__ __forceinline__ Tap<T> make_tap(T start, T bin, int p, int i, int grid, int size) {
  T v = start + p * bin + static_cast<T>(i + .5f) * bin / static_cast<T>(grid);
  Tap<T> t;
  if (!(v >= T(-1) && v <= T(size))) {  // NaN lands here too
    t.lo = t.hi = -1;
    t.l = t.h = T(0);
    return t;
  }
  if (v <= 0) v = 0;
  int lo = int(v), hi;
  if (lo >= size - 1) {
    hi = lo = size - 1;
    v = T(lo);
  } else {
    hi = lo + 1;
  }
  t.lo = lo;
  t.hi = hi;
  t.l = v - T(lo);
  t.h = T(1) - t.l;
  return t;
}

// Shared taps: y taps [0, PH*gh), then x taps [PH*gh, +PW*gw). Returns false (and computes
// nothing) when they do not fit; the caller then uses make_tap directly. Block-uniform.
template <typename T>
__device__ bool build_taps(const Roi<T>& r, int PH, int PW, int H, int W, Tap<T>* taps) {
  const int64_t ny = int64_t(PH) * max(r.gh, 0), nx = int64_t(PW) * max(r.gw, 0);
  if (ny + nx > kTapCap) return false;
  for (int i = threadIdx.x; i < int(ny + nx); i += blockDim.x) {
    if (i < ny) {
      taps[i] = make_tap(r.start_h, r.bin_h, i / r.gh, i % r.gh, r.gh, H);
    } else {
      const int j = i - int(ny);
      taps[i] = make_tap(r.start_w, r.bin_w, j / r.gw, j % r.gw, r.gw, W);
    }
  }
  __syncthreads();
  return true;
}

template <typename T, bool TABLE>
__device__ __forceinline__ Tap<T> tap_y(const Roi<T>& r, const Tap<T>* taps, int ph, int iy,
                                        int H) {
  return TABLE ? taps[ph * r.gh + iy] : make_tap(r.start_h, r.bin_h, ph, iy, r.gh, H);
}

template <typename T, bool TABLE>
__device__ __forceinline__ Tap<T> tap_x(const Roi<T>& r, const Tap<T>* taps, int PH, int pw, int ix,
                                        int W) {
  return TABLE ? taps[PH * r.gh + pw * r.gw + ix] : make_tap(r.start_w, r.bin_w, pw, ix, r.gw, W);
}

// Sum of the bin's bilinear samples, accumulated in torchvision's order.
template <typename T, bool TABLE>
__device__ T pool_bin(const T* __restrict__ plane, const Roi<T>& r, const Tap<T>* taps, int PH,
                      int H, int W, int ph, int pw) {
  T acc = T(0);
  for (int iy = 0; iy < r.gh; ++iy) {
    const Tap<T> a = tap_y<T, TABLE>(r, taps, ph, iy, H);
    if (a.lo < 0) continue;
    const T* row_lo = plane + int64_t(a.lo) * W;
    const T* row_hi = plane + int64_t(a.hi) * W;
    for (int ix = 0; ix < r.gw; ++ix) {
      const Tap<T> b = tap_x<T, TABLE>(r, taps, PH, pw, ix, W);
      if (b.lo < 0) continue;
      const T w1 = a.h * b.h, w2 = a.h * b.l, w3 = a.l * b.h, w4 = a.l * b.l;
      acc += w1 * row_lo[b.lo] + w2 * row_lo[b.hi] + w3 * row_hi[b.lo] + w4 * row_hi[b.hi];
    }
  }
  return acc;
}

template <typename T>
__global__ void __launch_bounds__(kRoiThreads)
    forward_kernel(const T* __restrict__ input, int N, int C, int H, int W,
                   const T* __restrict__ rois, T scale, int PH, int PW, int sr, bool aligned,
                   int ctile, T* __restrict__ out) {
  extern __shared__ __align__(16) unsigned char smem[];
  Tap<T>* taps = reinterpret_cast<Tap<T>*>(smem);
  const int64_t k = blockIdx.x;
  const Roi<T> r = load_roi(rois, k, scale, aligned, PH, PW, sr);
  const int c0 = blockIdx.y * ctile, bins = PH * PW, total = min(ctile, C - c0) * bins;
  T* o = out + (k * C + c0) * bins;
  if (r.batch < 0 || r.batch >= N) {  // torchvision reads out of bounds; we write zeros
    for (int i = threadIdx.x; i < total; i += blockDim.x) o[i] = T(0);
    return;
  }
  const bool table = build_taps(r, PH, PW, H, W, taps);
  const T count = T(max(int64_t(r.gh) * r.gw, int64_t(1)));
  for (int i = threadIdx.x; i < total; i += blockDim.x) {
    const int c = c0 + i / bins, b = i % bins, ph = b / PW, pw = b % PW;
    const T* plane = input + (int64_t(r.batch) * C + c) * H * W;
    const T acc = table ? pool_bin<T, true>(plane, r, taps, PH, H, W, ph, pw)
                        : pool_bin<T, false>(plane, r, taps, PH, H, W, ph, pw);
    o[i] = acc / count;
  }
}

// ---------------------------------------------------------------------------- backward

// scale = 2^e with kpp * max|g| * scale < 2^62; false when max|g| is 0 or not finite.
__device__ __forceinline__ bool fixed_scale(Acc max_bits, int64_t kpp, double* scale) {
  const double mx = __longlong_as_double(static_cast<long long>(max_bits));
  if (!(mx > 0.0) || !isfinite(mx)) return false;
  int e1;
  frexp(mx, &e1);                                                             // mx < 2^e1
  const int b = kpp > 1 ? 64 - __clzll(static_cast<long long>(kpp - 1)) : 0;  // kpp <= 2^b
  *scale = ldexp(1.0, min(62 - e1 - b, 1023));  // a smaller scale is only coarser, never unsafe
  return true;
}

template <typename T, bool FIXED>
__device__ __forceinline__ void scatter(T* g, Acc* a, int64_t i, T v, double fscale) {
  if (FIXED)
    atomicAdd(a + i, static_cast<Acc>(llrint(double(v) * fscale)));  // two's complement wraps
  else
    atomicAdd(g + i, v);
}

template <typename T, bool TABLE, bool FIXED>
__device__ void scatter_bin(T* gplane, Acc* aplane, const Roi<T>& r, const Tap<T>* taps, int PH,
                            int H, int W, int ph, int pw, T grad, T count, double fscale) {
  for (int iy = 0; iy < r.gh; ++iy) {
    const Tap<T> a = tap_y<T, TABLE>(r, taps, ph, iy, H);
    if (a.lo < 0) continue;
    for (int ix = 0; ix < r.gw; ++ix) {
      const Tap<T> b = tap_x<T, TABLE>(r, taps, PH, pw, ix, W);
      if (b.lo < 0) continue;
      const T w1 = a.h * b.h, w2 = a.h * b.l, w3 = a.l * b.h, w4 = a.l * b.l;
      const int64_t lo = int64_t(a.lo) * W, hi = int64_t(a.hi) * W;
      scatter<T, FIXED>(gplane, aplane, lo + b.lo, grad * w1 / count, fscale);
      scatter<T, FIXED>(gplane, aplane, lo + b.hi, grad * w2 / count, fscale);
      scatter<T, FIXED>(gplane, aplane, hi + b.lo, grad * w3 / count, fscale);
      scatter<T, FIXED>(gplane, aplane, hi + b.hi, grad * w4 / count, fscale);
    }
  }
}

// Roi k's taps for the block's channel tile, one atomic each; threads run over (c, ph, pw).
// `taps`: kTapCap entries of shared memory. Block-uniform (build_taps synchronises).
template <typename T, bool FIXED>
__device__ void scatter_roi(const T* __restrict__ grad_out, int C, int H, int W, const Roi<T>& r,
                            int64_t k, int PH, int PW, int ctile, T* __restrict__ grad_in,
                            Acc* __restrict__ acc, double fscale, Tap<T>* taps) {
  const bool table = build_taps(r, PH, PW, H, W, taps);
  const T count = T(int64_t(r.gh) * r.gw);
  const int c0 = blockIdx.y * ctile, bins = PH * PW, total = min(ctile, C - c0) * bins;
  const T* g = grad_out + (k * C + c0) * bins;
  for (int i = threadIdx.x; i < total; i += blockDim.x) {
    const int c = c0 + i / bins, b = i % bins, ph = b / PW, pw = b % PW;
    const int64_t plane = (int64_t(r.batch) * C + c) * H * W;
    T* gp = FIXED ? nullptr : grad_in + plane;
    Acc* ap = FIXED ? acc + plane : nullptr;
    if (table)
      scatter_bin<T, true, FIXED>(gp, ap, r, taps, PH, H, W, ph, pw, g[i], count, fscale);
    else
      scatter_bin<T, false, FIXED>(gp, ap, r, taps, PH, H, W, ph, pw, g[i], count, fscale);
  }
}

template <typename T, bool FIXED>
__global__ void __launch_bounds__(kRoiThreads)
    backward_kernel(const T* __restrict__ grad_out, int N, int C, int H, int W,
                    const T* __restrict__ rois, int64_t K, T scale, int PH, int PW, int sr,
                    bool aligned, int ctile, T* __restrict__ grad_in, Acc* __restrict__ acc,
                    const Acc* __restrict__ gmax) {
  extern __shared__ __align__(16) unsigned char smem[];
  double fscale = 0.0;
  if (FIXED && !fixed_scale(*gmax, K * PH * PW, &fscale)) return;  // zeros or NaN: convert
  const int64_t k = blockIdx.x;
  const Roi<T> r = load_roi(rois, k, scale, aligned, PH, PW, sr);
  if (r.batch < 0 || r.batch >= N) return;
  scatter_roi<T, FIXED>(grad_out, C, H, W, r, k, PH, PW, ctile, grad_in, acc, fscale,
                        reinterpret_cast<Tap<T>*>(smem));
}

// ---------------------------------------------------------------------------- shared backward
// Sample (ph, iy, pw, ix) puts weight wy * wx on pixel (y, x), so a roi's gradient factors:
//   grad_in[y][x] += sum_ph Wy[ph][y] * (sum_pw g[ph][pw] * Wx[pw][x]) / count,
// Wy[ph][y] summing the y weights bin row ph's samples put on row y (Wx likewise). One block
// per (roi, channel tile), as above: it finds the roi's footprint (the pixel rectangle its taps
// touch), builds Wy and Wx over it in shared memory, then per channel T = g Wx (PH x touched
// columns), then each touched pixel once, neighbouring threads on neighbouring columns. Global
// atomics per (roi, channel) fall from one per tap (4*PH*PW*gh*gw, about one per 32-byte
// sector) to touched rows x touched columns, several per sector. A roi whose tables do not fit
// kSharedBytes takes the per-tap path. 24 KiB: under every device's 48 KiB default (no opt-in),
// not what limits blocks per SM on sm_80+ (registers do), and it holds the per-tap path's table.
// Global atomics bound both paths on an H200 (~130 G/s, scattered or not), so the time follows
// their count: 1.24 vs 1.75 ms at the bench's 1,000 FPN rois (578 vs 779 per roi and channel).
constexpr size_t kSharedBytes = 24 * 1024;
static_assert(kTapCap * sizeof(Tap<double>) <= kSharedBytes, "the fallback's tap table");

// Rows box[0..1] and columns box[2..3] that the roi's taps touch; false when an axis has no
// tap inside the map (nothing flows back). Block-uniform.
template <typename T>
__device__ bool footprint(const Roi<T>& r, int PH, int PW, int H, int W, int* box) {
  if (threadIdx.x == 0) {
    box[0] = box[2] = INT_MAX;
    box[1] = box[3] = -1;
  }
  __syncthreads();
  const int64_t ny = int64_t(PH) * max(r.gh, 0), nx = int64_t(PW) * max(r.gw, 0);
  int ylo = INT_MAX, yhi = -1, xlo = INT_MAX, xhi = -1;
  for (int64_t i = threadIdx.x; i < ny; i += blockDim.x) {
    const Tap<T> t = make_tap(r.start_h, r.bin_h, int(i / r.gh), int(i % r.gh), r.gh, H);
    if (t.lo >= 0) ylo = min(ylo, t.lo), yhi = max(yhi, t.hi);
  }
  for (int64_t i = threadIdx.x; i < nx; i += blockDim.x) {
    const Tap<T> t = make_tap(r.start_w, r.bin_w, int(i / r.gw), int(i % r.gw), r.gw, W);
    if (t.lo >= 0) xlo = min(xlo, t.lo), xhi = max(xhi, t.hi);
  }
  if (yhi >= 0) atomicMin(box, ylo), atomicMax(box + 1, yhi);
  if (xhi >= 0) atomicMin(box + 2, xlo), atomicMax(box + 3, xhi);
  __syncthreads();
  return box[1] >= 0 && box[3] >= 0;
}

// Bytes of the shared tables before T (ranges, Wy, Wx, touched lists), 8-aligned; SIZE_MAX
// when they cannot fit.
template <typename T> __device__ size_t fixed_bytes(int PH, int PW, int fh, int fw) {
  if (max(max(PH, PW), max(fh, fw)) > int(kSharedBytes)) return SIZE_MAX;
  const size_t lines = size_t(fh) + fw;
  const size_t b = 12 * lines + sizeof(T) * (size_t(PH) * fh + size_t(PW) * fw);
  return (b + 7) / 8 * 8;
}

__device__ __forceinline__ void touch(int2& range, int p) {
  atomicMin(&range.x, p);
  atomicMax(&range.y, p);
}

// Bin p's taps along one axis, added to its weight row w (offsets from the footprint origin);
// range[line] widens to every bin touching the line. The clamp only guards shared memory: the
// taps are the ones footprint() measured.
template <typename T>
__device__ void axis_weights(T start, T bin, int p, int grid, int size, int origin, int lines, T* w,
                             int2* range) {
  for (int i = 0; i < grid; ++i) {
    const Tap<T> t = make_tap(start, bin, p, i, grid, size);
    if (t.lo < 0) continue;
    const int lo = min(max(t.lo - origin, 0), lines - 1);
    const int hi = min(max(t.hi - origin, 0), lines - 1);
    w[lo] += t.h;
    w[hi] += t.l;
    touch(range[lo], p);
    touch(range[hi], p);
  }
}

// The touched lines (range non-empty), in order, into out; returns their count. One warp.
__device__ int compact_touched(const int2* range, int n, int* out) {
  const int lane = threadIdx.x % kWarp;
  int count = 0;
  for (int base = 0; base < n; base += kWarp) {
    const int i = base + lane;
    const bool t = i < n && range[i].x <= range[i].y;
    const unsigned m = __ballot_sync(0xffffffffu, t);
    if (t) out[count + __popc(m & ((1u << lane) - 1))] = i;
    count += __popc(m);
  }
  return count;
}

template <typename T>
__global__ void __launch_bounds__(kRoiThreads)
    backward_shared_kernel(const T* __restrict__ grad_out, int N, int C, int H, int W,
                           const T* __restrict__ rois, T scale, int PH, int PW, int sr,
                           bool aligned, int ctile, T* __restrict__ grad_in) {
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ int box[4], touched[2];
  const int64_t k = blockIdx.x;
  const Roi<T> r = load_roi(rois, k, scale, aligned, PH, PW, sr);
  if (r.batch < 0 || r.batch >= N || !footprint(r, PH, PW, H, W, box)) return;
  const int y0 = box[0], fh = box[1] - y0 + 1, x0 = box[2], fw = box[3] - x0 + 1;
  const size_t fixed = fixed_bytes<T>(PH, PW, fh, fw);
  if (fixed > kSharedBytes || kSharedBytes - fixed < sizeof(T) * PH * fw) {  // one channel
    scatter_roi<T, false>(grad_out, C, H, W, r, k, PH, PW, ctile, grad_in, nullptr, 0.0,
                          reinterpret_cast<Tap<T>*>(smem));
    return;
  }
  int2* yr = reinterpret_cast<int2*>(smem);  // (first, last) bin touching each row; then columns
  int2* xr = yr + fh;
  T* wy = reinterpret_cast<T*>(xr + fw);  // Wy [PH][fh], then Wx [PW][fw]
  T* wx = wy + PH * fh;
  int* rows = reinterpret_cast<int*>(wx + PW * fw);  // touched rows, then touched columns
  int* cols = rows + fh;
  T* tm = reinterpret_cast<T*>(smem + fixed);  // T [channels][PH][touched columns]
  for (int i = threadIdx.x; i < fh + fw; i += blockDim.x) yr[i] = make_int2(INT_MAX, -1);
  for (int i = threadIdx.x; i < PH * fh + PW * fw; i += blockDim.x) wy[i] = T(0);
  __syncthreads();
  for (int p = threadIdx.x; p < PH + PW; p += blockDim.x) {  // a thread owns a bin's row
    if (p < PH)
      axis_weights(r.start_h, r.bin_h, p, r.gh, H, y0, fh, wy + p * fh, yr);
    else
      axis_weights(r.start_w, r.bin_w, p - PH, r.gw, W, x0, fw, wx + (p - PH) * fw, xr);
  }
  __syncthreads();
  const int warp = threadIdx.x / kWarp;
  if (warp < 2) {
    const int n = warp ? compact_touched(xr, fw, cols) : compact_touched(yr, fh, rows);
    if (threadIdx.x % kWarp == 0) touched[warp] = n;
  }
  __syncthreads();
  const int ny = touched[0], nx = touched[1];  // >= 1: footprint() found taps on both axes
  const int cc = int((kSharedBytes - fixed) / (sizeof(T) * PH * nx));  // channels per pass
  const int c0 = blockIdx.y * ctile, nc = min(ctile, C - c0);
  const T count = T(int64_t(r.gh) * r.gw);
  for (int cb = 0; cb < nc; cb += cc) {
    const int n = min(cc, nc - cb);
    const T* g = grad_out + (k * C + c0 + cb) * PH * PW;
    for (int i = threadIdx.x; i < n * PH * nx; i += blockDim.x) {
      const int j = i % nx, x = cols[j];
      const T* gr = g + int64_t(i / nx) * PW;  // row (c, ph) of g
      T s = T(0);
      for (int pw = xr[x].x; pw <= xr[x].y; ++pw) s += gr[pw] * wx[pw * fw + x];
      tm[i] = s;
    }
    __syncthreads();
    T* gin = grad_in + ((int64_t(r.batch) * C + c0 + cb) * H + y0) * W + x0;
    for (int i = threadIdx.x; i < n * ny * nx; i += blockDim.x) {
      const int j = i % nx, cy = i / nx, y = rows[cy % ny], c = cy / ny;
      T s = T(0);
      for (int ph = yr[y].x; ph <= yr[y].y; ++ph) s += wy[ph * fh + y] * tm[(c * PH + ph) * nx + j];
      s /= count;
      if (s != T(0)) atomicAdd(gin + (int64_t(c) * H + y) * W + cols[j], s);  // zeros: no-ops
    }
    __syncthreads();  // tm is rewritten by the next pass
  }
}

// max |g| as the bit pattern of a non-negative double (ordered like the value; NaN > inf).
template <typename T>
__global__ void absmax_kernel(const T* __restrict__ g, int64_t n, Acc* __restrict__ out) {
  Acc m = 0;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    m = max(m, static_cast<Acc>(__double_as_longlong(fabs(double(g[i])))));
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) m = max(m, __shfl_xor_sync(0xffffffffu, m, o));
  if ((threadIdx.x & 31) == 0 && m) atomicMax(out, m);
}

template <typename T>
__global__ void from_fixed_kernel(const Acc* __restrict__ acc, int64_t n,
                                  const Acc* __restrict__ gmax, int64_t kpp, T* __restrict__ out) {
  const Acc bits = *gmax;
  double fscale = 1.0;
  const bool ok = fixed_scale(bits, kpp, &fscale);
  const bool nonfinite = bits >= 0x7FF0000000000000ull;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    out[i] = nonfinite ? T(NAN) : ok ? T(double(static_cast<long long>(acc[i])) / fscale) : T(0);
}

// ---------------------------------------------------------------------------- host

struct Launch {
  dim3 grid;
  int ctile;
  size_t smem;
};

template <typename T> Launch plan(int64_t K, int64_t C, int64_t PH, int64_t PW) {
  require_int32(K, "roi_align: K");
  require_int32(C, "roi_align: C");
  require_int32(PH * PW, "roi_align: PH * PW");
  int64_t ctile = std::clamp<int64_t>(kOutPerBlock / (PH * PW), 1, C);
  ctile = std::max(ctile, ceil_div(C, 65535));  // gridDim.y limit
  return {dim3(unsigned(K), unsigned(ceil_div(C, ctile))), int(ctile), kTapCap * sizeof(Tap<T>)};
}

void check_dims(int64_t N, int64_t H, int64_t W) {
  require_int32(N, "roi_align: N");
  require_int32(H, "roi_align: H");
  require_int32(W, "roi_align: W");
}

}  // namespace

template <typename T>
void roi_align_forward(const T* input, int64_t N, int64_t C, int64_t H, int64_t W, const T* rois,
                       int64_t K, int64_t PH, int64_t PW, double spatial_scale,
                       int64_t sampling_ratio, bool aligned, T* out, int device, void* stream) {
  if (K <= 0 || C <= 0 || PH <= 0 || PW <= 0) return;
  check_dims(N, H, W);
  DeviceGuard guard(device);
  cudaStream_t s = as_stream(stream);
  if (N <= 0 || H <= 0 || W <= 0) {  // no map to sample: every output is 0
    FASTDET_CUDA_CHECK(cudaMemsetAsync(out, 0, size_t(K * C * PH * PW) * sizeof(T), s));
    return;
  }
  const Launch l = plan<T>(K, C, PH, PW);
  const int sr = int(std::clamp<int64_t>(sampling_ratio, -1, INT_MAX));
  forward_kernel<T><<<l.grid, kRoiThreads, l.smem, s>>>(input, int(N), int(C), int(H), int(W), rois,
                                                        T(spatial_scale), int(PH), int(PW), sr,
                                                        aligned, l.ctile, out);
  FASTDET_CUDA_CHECK_LAUNCH();
}

size_t roi_align_backward_workspace_bytes(int64_t N, int64_t C, int64_t H, int64_t W,
                                          bool deterministic) {
  if (!deterministic) return 0;
  return size_t(std::max<int64_t>(N * C * H * W, 0)) * sizeof(Acc) + kAccOffset;
}

template <typename T>
void roi_align_backward(const T* grad_out, int64_t N, int64_t C, int64_t H, int64_t W,
                        const T* rois, int64_t K, int64_t PH, int64_t PW, double spatial_scale,
                        int64_t sampling_ratio, bool aligned, T* grad_input, bool deterministic,
                        bool shared, void* workspace, size_t workspace_bytes, int device,
                        void* stream) {
  const int64_t numel = N * C * H * W;
  if (N <= 0 || C <= 0 || H <= 0 || W <= 0) return;  // grad_input is empty
  check_dims(N, H, W);
  DeviceGuard guard(device);
  cudaStream_t s = as_stream(stream);
  if (K <= 0 || PH <= 0 || PW <= 0) {  // nothing flows back: grad_input = 0
    FASTDET_CUDA_CHECK(cudaMemsetAsync(grad_input, 0, size_t(numel) * sizeof(T), s));
    return;
  }
  const Launch l = plan<T>(K, C, PH, PW);
  const int sr = int(std::clamp<int64_t>(sampling_ratio, -1, INT_MAX));
  const T scale = T(spatial_scale);
  if (!deterministic) {
    FASTDET_CUDA_CHECK(cudaMemsetAsync(grad_input, 0, size_t(numel) * sizeof(T), s));
    if (shared)
      backward_shared_kernel<T><<<l.grid, kRoiThreads, kSharedBytes, s>>>(
          grad_out, int(N), int(C), int(H), int(W), rois, scale, int(PH), int(PW), sr, aligned,
          l.ctile, grad_input);
    else
      backward_kernel<T, false><<<l.grid, kRoiThreads, l.smem, s>>>(
          grad_out, int(N), int(C), int(H), int(W), rois, K, scale, int(PH), int(PW), sr, aligned,
          l.ctile, grad_input, nullptr, nullptr);
    FASTDET_CUDA_CHECK_LAUNCH();
    return;
  }
  const size_t need = roi_align_backward_workspace_bytes(N, C, H, W, true);
  if (!workspace || workspace_bytes < need || reinterpret_cast<uintptr_t>(workspace) % 8)
    throw std::invalid_argument(
        "fastdet CUDA roi_align_backward: deterministic mode needs an 8-byte aligned workspace "
        "of roi_align_backward_workspace_bytes(N, C, H, W, true) = " +
        std::to_string(need) + " bytes, got " + std::to_string(workspace_bytes));
  Acc* gmax = static_cast<Acc*>(workspace);
  Acc* acc = reinterpret_cast<Acc*>(static_cast<char*>(workspace) + kAccOffset);
  FASTDET_CUDA_CHECK(cudaMemsetAsync(workspace, 0, need, s));
  const int64_t nout = K * C * PH * PW;
  absmax_kernel<T><<<grid_1d(nout), kThreads, 0, s>>>(grad_out, nout, gmax);
  FASTDET_CUDA_CHECK_LAUNCH();
  backward_kernel<T, true><<<l.grid, kRoiThreads, l.smem, s>>>(
      grad_out, int(N), int(C), int(H), int(W), rois, K, scale, int(PH), int(PW), sr, aligned,
      l.ctile, nullptr, acc, gmax);
  FASTDET_CUDA_CHECK_LAUNCH();
  from_fixed_kernel<T>
      <<<grid_1d(numel), kThreads, 0, s>>>(acc, numel, gmax, K * PH * PW, grad_input);
  FASTDET_CUDA_CHECK_LAUNCH();
}

#define FASTDET_INSTANTIATE(T)                                                                    \
  template void roi_align_forward<T>(const T*, int64_t, int64_t, int64_t, int64_t, const T*,      \
                                     int64_t, int64_t, int64_t, double, int64_t, bool, T*, int,   \
                                     void*);                                                      \
  template void roi_align_backward<T>(const T*, int64_t, int64_t, int64_t, int64_t, const T*,     \
                                      int64_t, int64_t, int64_t, double, int64_t, bool, T*, bool, \
                                      bool, void*, size_t, int, void*);
FASTDET_INSTANTIATE(float)
FASTDET_INSTANTIATE(double)

}  // namespace fastdet::cuda
