// fastdet._C: the one pybind11 module. Thin: pointers (as integers) and sizes in, a dtype code
// picks the template (0 = float32, 1 = float64). Every kernel runs with the GIL released.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "fastdet/ops.h"

namespace py = pybind11;
using ptr = std::uintptr_t;
using Weights = std::array<double, 4>;  // BoxCoder (wx, wy, ww, wh)

namespace {

template <typename T> T* P(ptr p) { return reinterpret_cast<T*>(p); }
void* V(ptr p) { return reinterpret_cast<void*>(p); }

// Calls f with a float or double null pointer tag chosen by the dtype code.
template <typename F> auto dispatch(int dtype, F&& f) {
  if (dtype == 0) return f(static_cast<float*>(nullptr));
  if (dtype == 1) return f(static_cast<double*>(nullptr));
  throw std::invalid_argument("fastdet._C: dtype code must be 0 (float32) or 1 (float64)");
}

#define FD_T using T = std::remove_pointer_t<decltype(tag)>
const auto nogil = py::call_guard<py::gil_scoped_release>();

void bind_cpu(py::module_& m) {
  auto c = m.def_submodule("cpu", "OpenMP kernels");
  c.def("max_threads", &fastdet::cpu::max_threads);
  c.def("set_num_threads", &fastdet::cpu::set_num_threads);
  c.def(
      "count_nonfinite",
      [](int dt, ptr x, int64_t n) {
        return dispatch(dt, [&](auto tag) {
          FD_T;
          return fastdet::cpu::count_nonfinite(P<T>(x), n);
        });
      },
      nogil);
  c.def(
      "box_area",
      [](int dt, ptr b, int64_t n, ptr out) {
        dispatch(dt, [&](auto tag) {
          FD_T;
          fastdet::cpu::box_area(P<T>(b), n, P<T>(out));
        });
      },
      nogil);
  c.def(
      "box_iou",
      [](int dt, ptr a, int64_t n, ptr b, int64_t m, ptr out) {
        dispatch(dt, [&](auto tag) {
          FD_T;
          fastdet::cpu::box_iou(P<T>(a), n, P<T>(b), m, P<T>(out));
        });
      },
      nogil);
  c.def(
      "generalized_box_iou",
      [](int dt, ptr a, int64_t n, ptr b, int64_t m, ptr out) {
        dispatch(dt, [&](auto tag) {
          FD_T;
          fastdet::cpu::generalized_box_iou(P<T>(a), n, P<T>(b), m, P<T>(out));
        });
      },
      nogil);
  c.def(
      "nms",
      [](int dt, ptr b, ptr s, int64_t n, double thr, ptr keep) {
        return dispatch(dt, [&](auto tag) {
          FD_T;
          return fastdet::cpu::nms(P<T>(b), P<T>(s), n, thr, P<int64_t>(keep));
        });
      },
      nogil);
  c.def(
      "batched_nms",
      [](int dt, ptr b, ptr s, ptr idx, int64_t n, double thr, ptr keep) {
        return dispatch(dt, [&](auto tag) {
          FD_T;
          return fastdet::cpu::batched_nms(P<T>(b), P<T>(s), P<int64_t>(idx), n, thr,
                                           P<int64_t>(keep));
        });
      },
      nogil);
  c.def(
      "soft_nms",
      [](int dt, ptr b, ptr s, int64_t n, double thr, double sigma, double sthr, int method,
         ptr keep, ptr out_scores) {
        return dispatch(dt, [&](auto tag) {
          FD_T;
          return fastdet::cpu::soft_nms(P<T>(b), P<T>(s), n, thr, sigma, sthr, method,
                                        P<int64_t>(keep), P<T>(out_scores));
        });
      },
      nogil);
  c.def(
      "roi_align_forward",
      [](int dt, ptr x, int64_t N, int64_t C, int64_t H, int64_t W, ptr rois, int64_t K, int64_t PH,
         int64_t PW, double scale, int64_t sr, bool aligned, ptr out) {
        dispatch(dt, [&](auto tag) {
          FD_T;
          fastdet::cpu::roi_align_forward(P<T>(x), N, C, H, W, P<T>(rois), K, PH, PW, scale, sr,
                                          aligned, P<T>(out));
        });
      },
      nogil);
  c.def(
      "roi_align_backward",
      [](int dt, ptr g, int64_t N, int64_t C, int64_t H, int64_t W, ptr rois, int64_t K, int64_t PH,
         int64_t PW, double scale, int64_t sr, bool aligned, ptr gin) {
        dispatch(dt, [&](auto tag) {
          FD_T;
          fastdet::cpu::roi_align_backward(P<T>(g), N, C, H, W, P<T>(rois), K, PH, PW, scale, sr,
                                           aligned, P<T>(gin));
        });
      },
      nogil);
  c.def(
      "grid_anchors",
      [](int dt, ptr base, int64_t A, int64_t gh, int64_t gw, double sh, double sw, ptr out) {
        dispatch(dt, [&](auto tag) {
          FD_T;
          fastdet::cpu::grid_anchors(P<T>(base), A, gh, gw, sh, sw, P<T>(out));
        });
      },
      nogil);
  c.def(
      "encode_boxes",
      [](int dt, ptr gt, ptr prop, int64_t n, Weights w, ptr out) {
        dispatch(dt, [&](auto tag) {
          FD_T;
          fastdet::cpu::encode_boxes(P<T>(gt), P<T>(prop), n, w.data(), P<T>(out));
        });
      },
      nogil);
  c.def(
      "decode_boxes",
      [](int dt, ptr codes, ptr boxes, int64_t n, int64_t k, Weights w, double clip, ptr out) {
        dispatch(dt, [&](auto tag) {
          FD_T;
          fastdet::cpu::decode_boxes(P<T>(codes), P<T>(boxes), n, k, w.data(), clip, P<T>(out));
        });
      },
      nogil);
  c.def(
      "clip_boxes",
      [](int dt, ptr b, int64_t n, double h, double w, ptr out) {
        dispatch(dt, [&](auto tag) {
          FD_T;
          fastdet::cpu::clip_boxes(P<T>(b), n, h, w, P<T>(out));
        });
      },
      nogil);
  c.def(
      "remove_small_boxes",
      [](int dt, ptr b, int64_t n, double min_size, ptr keep) {
        return dispatch(dt, [&](auto tag) {
          FD_T;
          return fastdet::cpu::remove_small_boxes(P<T>(b), n, min_size, P<int64_t>(keep));
        });
      },
      nogil);
}

#ifdef FASTDET_WITH_CUDA
namespace cu = fastdet::cuda;

void bind_cuda(py::module_& m) {
  auto c = m.def_submodule("cuda", "CUDA kernels; each call takes (device, stream) last");
  c.def("available", &cu::available);
  c.def("device_count", &cu::device_count);
  c.def("version", &cu::version);
  c.def("archs", &cu::archs);
  c.def("nms_workspace_bytes", &cu::nms_workspace_bytes);
  c.def("batched_nms_workspace_bytes", &cu::batched_nms_workspace_bytes);
  c.def("soft_nms_workspace_bytes", &cu::soft_nms_workspace_bytes);
  c.def("roi_align_backward_workspace_bytes", &cu::roi_align_backward_workspace_bytes);
  c.def(
      "box_area",
      [](int dt, ptr b, int64_t n, ptr out, int dev, ptr st) {
        dispatch(dt, [&](auto tag) {
          FD_T;
          cu::box_area(P<T>(b), n, P<T>(out), dev, V(st));
        });
      },
      nogil);
  c.def(
      "box_iou",
      [](int dt, ptr a, int64_t n, ptr b, int64_t m, ptr out, int dev, ptr st) {
        dispatch(dt, [&](auto tag) {
          FD_T;
          cu::box_iou(P<T>(a), n, P<T>(b), m, P<T>(out), dev, V(st));
        });
      },
      nogil);
  c.def(
      "generalized_box_iou",
      [](int dt, ptr a, int64_t n, ptr b, int64_t m, ptr out, int dev, ptr st) {
        dispatch(dt, [&](auto tag) {
          FD_T;
          cu::generalized_box_iou(P<T>(a), n, P<T>(b), m, P<T>(out), dev, V(st));
        });
      },
      nogil);
  c.def(
      "nms",
      [](int dt, ptr b, ptr s, int64_t n, double thr, ptr keep, ptr ws, size_t wsb, int dev,
         ptr st) {
        return dispatch(dt, [&](auto tag) {
          FD_T;
          return cu::nms(P<T>(b), P<T>(s), n, thr, P<int64_t>(keep), V(ws), wsb, dev, V(st));
        });
      },
      nogil);
  c.def(
      "batched_nms",
      [](int dt, ptr b, ptr s, ptr idx, int64_t n, double thr, ptr keep, ptr ws, size_t wsb,
         int dev, ptr st) {
        return dispatch(dt, [&](auto tag) {
          FD_T;
          return cu::batched_nms(P<T>(b), P<T>(s), P<int64_t>(idx), n, thr, P<int64_t>(keep), V(ws),
                                 wsb, dev, V(st));
        });
      },
      nogil);
  c.def(
      "soft_nms",
      [](int dt, ptr b, ptr s, int64_t n, double thr, double sigma, double sthr, int method,
         ptr keep, ptr out_scores, ptr ws, size_t wsb, int dev, ptr st) {
        return dispatch(dt, [&](auto tag) {
          FD_T;
          return cu::soft_nms(P<T>(b), P<T>(s), n, thr, sigma, sthr, method, P<int64_t>(keep),
                              P<T>(out_scores), V(ws), wsb, dev, V(st));
        });
      },
      nogil);
  c.def(
      "roi_align_forward",
      [](int dt, ptr x, int64_t N, int64_t C, int64_t H, int64_t W, ptr rois, int64_t K, int64_t PH,
         int64_t PW, double scale, int64_t sr, bool aligned, ptr out, int dev, ptr st) {
        dispatch(dt, [&](auto tag) {
          FD_T;
          cu::roi_align_forward(P<T>(x), N, C, H, W, P<T>(rois), K, PH, PW, scale, sr, aligned,
                                P<T>(out), dev, V(st));
        });
      },
      nogil);
  c.def(
      "roi_align_backward",
      [](int dt, ptr g, int64_t N, int64_t C, int64_t H, int64_t W, ptr rois, int64_t K, int64_t PH,
         int64_t PW, double scale, int64_t sr, bool aligned, ptr gin, bool det, bool shared, ptr ws,
         size_t wsb, int dev, ptr st) {
        dispatch(dt, [&](auto tag) {
          FD_T;
          cu::roi_align_backward(P<T>(g), N, C, H, W, P<T>(rois), K, PH, PW, scale, sr, aligned,
                                 P<T>(gin), det, shared, V(ws), wsb, dev, V(st));
        });
      },
      nogil);
  c.def(
      "grid_anchors",
      [](int dt, ptr base, int64_t A, int64_t gh, int64_t gw, double sh, double sw, ptr out,
         int dev, ptr st) {
        dispatch(dt, [&](auto tag) {
          FD_T;
          cu::grid_anchors(P<T>(base), A, gh, gw, sh, sw, P<T>(out), dev, V(st));
        });
      },
      nogil);
  c.def(
      "encode_boxes",
      [](int dt, ptr gt, ptr prop, int64_t n, Weights w, ptr out, int dev, ptr st) {
        dispatch(dt, [&](auto tag) {
          FD_T;
          cu::encode_boxes(P<T>(gt), P<T>(prop), n, w.data(), P<T>(out), dev, V(st));
        });
      },
      nogil);
  c.def(
      "decode_boxes",
      [](int dt, ptr codes, ptr boxes, int64_t n, int64_t k, Weights w, double clip, ptr out,
         int dev, ptr st) {
        dispatch(dt, [&](auto tag) {
          FD_T;
          cu::decode_boxes(P<T>(codes), P<T>(boxes), n, k, w.data(), clip, P<T>(out), dev, V(st));
        });
      },
      nogil);
  c.def(
      "clip_boxes",
      [](int dt, ptr b, int64_t n, double h, double w, ptr out, int dev, ptr st) {
        dispatch(dt, [&](auto tag) {
          FD_T;
          cu::clip_boxes(P<T>(b), n, h, w, P<T>(out), dev, V(st));
        });
      },
      nogil);
}
#endif

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastdet compiled kernels";
  m.attr("__version__") = FASTDET_VERSION;
#ifdef _OPENMP
  m.attr("openmp") = true;
#else
  m.attr("openmp") = false;
#endif
  bind_cpu(m);
#ifdef FASTDET_WITH_CUDA
  m.attr("with_cuda") = true;
  bind_cuda(m);
#else
  m.attr("with_cuda") = false;
#endif
}
