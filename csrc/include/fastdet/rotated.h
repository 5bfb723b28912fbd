// Rotated-box geometry shared by the CPU and CUDA kernels.
//
// A box is (cx, cy, w, h, angle): centre, width along the box's own x axis, height along its y
// axis, angle in degrees, counter-clockwise as seen in an image whose y axis points down
// (torchvision's "cxcywhr", detectron2's RotatedBoxes). The box point at local offset (u, v)
// is (cx + u cos(a) + v sin(a), cy - u sin(a) + v cos(a)).
// A box with w <= 0 or h <= 0 has area 0 and IoU 0 with every box (never NaN).
//
// Intersection: box b is moved into box a's frame, where a is the axis-aligned rectangle
// [-w/2, w/2] x [-h/2, h/2], and clipped against a's four sides (Sutherland-Hodgman). Clipping
// one polygon keeps the result consistent for touching, identical and nearly parallel boxes:
// there is no eps, no separate edge-intersection test and no hull to rebuild.
// Identical boxes give IoU exactly 1, and multiples of 90 degrees are exact (cos(90) is 0).
// The trigonometry is our own polynomials, so the CPU and the GPU give the same bits.
#pragma once

#include <math.h>

#include "fastdet/box.h"

namespace fastdet {
namespace rotated_detail {

template <typename T> FASTDET_HD T abs_(T x) { return x < T(0) ? -x : x; }

// Correctly rounded on both devices (IEEE sqrt; CUDA's default -prec-sqrt=true).
FASTDET_HD float sqrt_(float x) { return sqrtf(x); }
FASTDET_HD double sqrt_(double x) { return sqrt(x); }

// Round to nearest (ties to even) for |x| < 2^22 (float) or 2^51 (double); no libm call, so
// it vectorises and is the same instruction sequence on both devices.
template <typename T> FASTDET_HD T round_(T x) {
  const T magic = sizeof(T) == 4 ? T(12582912.0) : T(6755399441055744.0);  // 1.5 * 2^(p-1)
  return x < T(0) ? -((-x + magic) - magic) : (x + magic) - magic;
}

// c0 + x (c1 + x (c2 + ...)), innermost first: Horner's scheme, rounded as written out.
template <typename T> FASTDET_HD T horner(T, T c) { return c; }
template <typename T, typename... C> FASTDET_HD T horner(T x, T c0, C... c) {
  return c0 + x * horner(x, c...);
}

// sin and cos of r radians for |r| <= pi/4 (+ a little): Taylor series, truncation error below
// half an ulp of T there. The coefficients are (-1)^j / k! for k = 2j + 1 (sin, r factored out)
// and k = 2j (cos), as T.
template <typename T> FASTDET_HD void sincos_small(T r, T* s, T* c) {
  const T r2 = r * r;
  if constexpr (sizeof(T) == 4) {
    *s = r * horner(r2, T(1), T(-1.0 / 6), T(1.0 / 120), T(-1.0 / 5040), T(1.0 / 362880));
    *c = horner(r2, T(1), T(-0.5), T(1.0 / 24), T(-1.0 / 720), T(1.0 / 40320), T(-1.0 / 3628800));
  } else {
    *s = r * horner(r2, T(1), T(-1.0 / 6.0), T(1.0 / 120.0), T(-1.0 / 5040.0), T(1.0 / 362880.0),
                    T(-1.0 / 39916800.0), T(1.0 / 6227020800.0), T(-1.0 / 1307674368000.0),
                    T(1.0 / 355687428096000.0));
    *c = horner(r2, T(1), T(-0.5), T(1.0 / 24.0), T(-1.0 / 720.0), T(1.0 / 40320.0),
                T(-1.0 / 3628800.0), T(1.0 / 479001600.0), T(-1.0 / 87178291200.0),
                T(1.0 / 20922789888000.0));
  }
}

}  // namespace rotated_detail

// An angle in degrees reduced to about [-180, 180]. Exact (a - 360 q has no rounding error
// while |a| < 2^24 for float, 2^53 for double), so equal angles stay equal.
template <typename T> FASTDET_HD T reduce_degrees(T a) {
  return a - T(360) * rotated_detail::round_(a * T(1.0 / 360));  // q: any integer near a/360
}

// sin and cos of `deg` degrees, |deg| up to a few turns: an exact reduction to [-45, 45] plus a
// quadrant, so multiples of 90 give exact 0 and +-1.
template <typename T> FASTDET_HD void sincos_degrees(T deg, T* s, T* c) {
  using namespace rotated_detail;
  T q = round_(deg * T(1.0 / 90));   // any integer near deg / 90: x stays exact
  const T x = deg - T(90) * q;       // exact
  q = fmin_(fmax_(q, T(-8)), T(8));  // NaN lands in range too: the int conversion stays defined
  T ss, cc;
  sincos_small(x * T(0.017453292519943295), &ss, &cc);
  switch (int(q) & 3) {
    case 0:
      *s = ss, *c = cc;
      break;
    case 1:
      *s = cc, *c = -ss;
      break;
    case 2:
      *s = -ss, *c = -cc;
      break;
    default:
      *s = -cc, *c = ss;
      break;
  }
}

// A box with what every pair needs precomputed: made once per box, used for many pairs.
template <typename T> struct RBox {
  T cx, cy;  // centre
  T hw, hh;  // half width, half height
  T deg;     // angle, reduced to about [-180, 180]
  T c, s;    // its cos and sin
  T area;    // w * h, 0 when w <= 0 or h <= 0
  T r;       // half diagonal: the radius of the circle around the box
  T ex, ey;  // half extents of the axis-aligned box around it
};

template <typename T> FASTDET_HD RBox<T> make_rbox(const T* b) {
  RBox<T> o;
  o.cx = b[0];
  o.cy = b[1];
  const bool empty = !(b[2] > T(0) && b[3] > T(0));
  o.hw = empty ? T(0) : T(0.5) * b[2];
  o.hh = empty ? T(0) : T(0.5) * b[3];
  o.area = empty ? T(0) : b[2] * b[3];
  o.deg = reduce_degrees(b[4]);
  sincos_degrees(o.deg, &o.s, &o.c);
  // Padded by a few ulps, so that rounding never puts a box outside its circle or extents.
  const T pad = T(1) + T(sizeof(T) == 4 ? 1e-6 : 1e-15);
  o.r = rotated_detail::sqrt_(o.hw * o.hw + o.hh * o.hh) * pad;  // sqrt: IEEE on both devices
  using rotated_detail::abs_;
  o.ex = (abs_(o.c) * o.hw + abs_(o.s) * o.hh) * pad;
  o.ey = (abs_(o.s) * o.hw + abs_(o.c) * o.hh) * pad;
  return o;
}

namespace rotated_detail {

constexpr int kMaxVerts = 12;  // 4 + one per side in exact arithmetic (8); the rest is slack

// Keeps the part of polygon (x, y)[0, n) with sign * x <= lim (Y: with y), writing it to
// (ox, oy); returns its vertex count. New vertices lie exactly on the side.
template <bool Y, typename T>
FASTDET_HD int clip_side(const T* x, const T* y, int n, T sign, T lim, T* ox, T* oy) {
  int m = 0;
  for (int i = 0; i < n; ++i) {
    const int j = i + 1 == n ? 0 : i + 1;
    const T di = sign * (Y ? y[i] : x[i]) - lim, dj = sign * (Y ? y[j] : x[j]) - lim;
    if (di <= T(0) && m < kMaxVerts) {
      ox[m] = x[i];
      oy[m] = y[i];
      ++m;
    }
    if (((di < T(0) && dj > T(0)) || (di > T(0) && dj < T(0))) && m < kMaxVerts) {
      const T t = di / (di - dj);  // in (0, 1]: the signs differ strictly
      if (Y) {
        ox[m] = x[i] + (x[j] - x[i]) * t;
        oy[m] = sign * lim;
      } else {
        ox[m] = sign * lim;
        oy[m] = y[i] + (y[j] - y[i]) * t;
      }
      ++m;
    }
  }
  return m;
}

// One clip_side pass from (px, py) into (qx, qy), then the two swap roles.
template <bool Y, typename T>
FASTDET_HD void clip_into(T** px, T** py, T** qx, T** qy, int* n, T sign, T lim) {
  *n = clip_side<Y>(*px, *py, *n, sign, lim, *qx, *qy);
  T* t = *px;
  *px = *qx, *qx = t;
  t = *py;
  *py = *qy, *qy = t;
}

}  // namespace rotated_detail

// Intersection area of a and b (both with area > 0). b is taken into a's frame: centre
// (dx, dy), turned by deg(b) - deg(a) relative to a.
template <typename T> FASTDET_HD T rotated_intersection(const RBox<T>& a, const RBox<T>& b) {
  using namespace rotated_detail;
  const T ex = b.cx - a.cx, ey = b.cy - a.cy;
  // Rotate by +a (the inverse of the box-to-image map) to get b's centre in a's frame.
  const T dx = a.c * ex - a.s * ey, dy = a.s * ex + a.c * ey;
  T sd, cd;
  sincos_degrees(b.deg - a.deg, &sd, &cd);
  // b's half axes in a's frame
  const T ux = cd * b.hw, uy = -sd * b.hw, vx = sd * b.hh, vy = cd * b.hh;
  // Separating axes. a's: b's extent along x and y. b's: a's extent along b's axes.
  const T bx = abs_(ux) + abs_(vx), by = abs_(uy) + abs_(vy);
  if (abs_(dx) >= a.hw + bx || abs_(dy) >= a.hh + by) return T(0);
  const T pu = dx * cd - dy * sd, pv = dx * sd + dy * cd;  // a's centre from b's, on b's axes
  const T au = a.hw * abs_(cd) + a.hh * abs_(sd), av = a.hw * abs_(sd) + a.hh * abs_(cd);
  if (abs_(pu) >= b.hw + au || abs_(pv) >= b.hh + av) return T(0);
  // Containment: b inside a, or a inside b; exact areas, no clipping.
  if (abs_(dx) + bx <= a.hw && abs_(dy) + by <= a.hh) return b.area;
  if (abs_(pu) + au <= b.hw && abs_(pv) + av <= b.hh) return a.area;
  T x0[kMaxVerts], y0[kMaxVerts], x1[kMaxVerts], y1[kMaxVerts];
  x0[0] = dx + ux + vx, y0[0] = dy + uy + vy;
  x0[1] = dx - ux + vx, y0[1] = dy - uy + vy;
  x0[2] = dx - ux - vx, y0[2] = dy - uy - vy;
  x0[3] = dx + ux - vx, y0[3] = dy + uy - vy;
  // Only the sides of a that b crosses (its extents say which); each pass writes the other pair
  // of arrays.
  T *px = x0, *py = y0, *qx = x1, *qy = y1;
  int n = 4;
  if (dx + bx > a.hw) clip_into<false>(&px, &py, &qx, &qy, &n, T(1), a.hw);
  if (dx - bx < -a.hw) clip_into<false>(&px, &py, &qx, &qy, &n, T(-1), a.hw);
  if (dy + by > a.hh) clip_into<true>(&px, &py, &qx, &qy, &n, T(1), a.hh);
  if (dy - by < -a.hh) clip_into<true>(&px, &py, &qx, &qy, &n, T(-1), a.hh);
  // Shoelace; the polygon keeps b's orientation, whichever it is.
  T twice = T(0);
  for (int i = 0; i < n; ++i) {
    const int j = i + 1 == n ? 0 : i + 1;
    twice += px[i] * py[j] - px[j] * py[i];
  }
  return fmin_(T(0.5) * abs_(twice), fmin_(a.area, b.area));
}

template <typename T> FASTDET_HD T rotated_iou(const RBox<T>& a, const RBox<T>& b) {
  if (!(a.area > T(0) && b.area > T(0))) return T(0);
  const T ex = b.cx - a.cx, ey = b.cy - a.cy, rr = a.r + b.r;
  if (ex * ex + ey * ey >= rr * rr) return T(0);  // the circles around them do not overlap
  const T inter = rotated_intersection(a, b);
  return inter > T(0) ? fmin_(inter / (a.area + b.area - inter), T(1)) : T(0);
}

// Whether IoU(a, b) > t, the decision of the NMS kernels on both devices. Where a bound settles
// it the clipping is skipped: the intersection is at most the smaller area and the overlap of
// the axis-aligned boxes around the two, which is often far below t. The bound carries 0.1%
// over the clipping's rounding, so it only skips pairs whose IoU is surely <= t.
template <typename T>
FASTDET_HD bool rotated_iou_above(const RBox<T>& a, const RBox<T>& b, double t) {
  using rotated_detail::abs_;
  if (t < 0) return true;  // every IoU, 0 included, is above a negative threshold
  if (!(a.area > T(0) && b.area > T(0))) return false;
  const T ix = fmin_(a.ex + b.ex - abs_(b.cx - a.cx), T(2) * fmin_(a.ex, b.ex));
  const T iy = fmin_(a.ey + b.ey - abs_(b.cy - a.cy), T(2) * fmin_(a.ey, b.ey));
  if (!(ix > T(0) && iy > T(0))) return false;
  const double ub = double(fmin_(ix * iy, fmin_(a.area, b.area))) * 1.001;
  if (ub <= t * (double(a.area) + double(b.area) - ub)) return false;
  return double(rotated_iou(a, b)) > t;
}

}  // namespace fastdet
