// fastdet._C: the one pybind11 module. Thin: pointers (as integers) and sizes in, a DType member
// picks the template. Every kernel runs with the GIL released. Every binding names its arguments
// and has a one-line docstring (tests/test_build.py checks), so help(fastdet._C.cpu) reads well.
// A kernel both backends have is bound once, for both submodules (Backends::def).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "fastdet/ops.h"

namespace py = pybind11;
using namespace pybind11::literals;
using ptr = std::uintptr_t;
using Weights = std::array<double, 4>;  // BoxCoder (wx, wy, ww, wh)

namespace {

// The element type of a kernel call's float arrays. Scoped: a bare int is refused, so a caller
// cannot pass a stale numeric code.
enum class DType : int { kFloat32 = 0, kFloat64 = 1 };

template <typename T> T* P(ptr p) { return reinterpret_cast<T*>(p); }
void* V(ptr p) { return reinterpret_cast<void*>(p); }

// Calls f with a float or double null pointer tag chosen by the dtype.
template <typename F> auto dispatch(DType dtype, F&& f) {
  if (dtype == DType::kFloat32) return f(static_cast<float*>(nullptr));
  if (dtype == DType::kFloat64) return f(static_cast<double*>(nullptr));
  throw std::invalid_argument("fastdet._C: dtype must be DType.float32 or DType.float64");
}

#define FD_T using T = std::remove_pointer_t<decltype(tag)>
#define FD_TB                                      \
  using T = std::remove_pointer_t<decltype(mtag)>; \
  using B = std::remove_pointer_t<decltype(btag)>
const auto nogil = py::call_guard<py::gil_scoped_release>();

// Registered before the functions, so their signatures name fastdet._C.DType, not a C++ type.
void bind_enums(py::module_& m) {
  py::enum_<DType>(m, "DType", "Element type of a kernel call's float arrays")
      .value("float32", DType::kFloat32)
      .value("float64", DType::kFloat64);
  py::enum_<fastdet::Status>(m, "Status",
                             "Negative results of the kernels that return a count (NMS family)")
      .value("non_finite", fastdet::kNonFinite, "a box coordinate or score is NaN or inf")
      .value("workspace_too_small", fastdet::kOutOfMemory, "the workspace given is too small")
      .value("bad_index", fastdet::kBadIndex, "an index argument is out of range");
  py::enum_<fastdet::SoftNmsMethod>(m, "SoftNmsMethod", "soft_nms score decay")
      .value("linear", fastdet::kLinear, "s *= 1 - IoU where IoU > iou_threshold")
      .value("gaussian", fastdet::kGaussian, "s *= exp(-IoU^2 / sigma)");
  py::enum_<fastdet::IouKind>(m, "IouKind", "Member of the pairwise IoU family")
      .value("iou", fastdet::kIou)
      .value("generalized", fastdet::kGiou)
      .value("distance", fastdet::kDiou)
      .value("complete", fastdet::kCiou);
}

// ---------------------------------------------------------------- one binding for both backends

// The arguments a CUDA kernel takes after its CPU twin's: their Python names and types (args'
// parameters), and the kernel arguments they become (args' result).
struct NoTail {
  static std::tuple<> names() { return {}; }
  static std::tuple<> args() { return {}; }
};
struct Stream {
  static auto names() { return std::make_tuple("device"_a, "stream"_a); }
  static auto args(int device, ptr stream) { return std::make_tuple(device, V(stream)); }
};
struct Workspace {  // then (device, stream)
  static auto names() {
    return std::tuple_cat(std::make_tuple("workspace"_a, "workspace_bytes"_a), Stream::names());
  }
  static auto args(ptr workspace, size_t bytes, int device, ptr stream) {
    return std::tuple_cat(std::make_tuple(V(workspace), bytes), Stream::args(device, stream));
  }
};
struct RoiAlignBackward {  // (deterministic, shared), then a workspace
  static auto names() {
    return std::tuple_cat(std::make_tuple("deterministic"_a, "shared"_a), Workspace::names());
  }
  static auto args(bool deterministic, bool shared, ptr workspace, size_t bytes, int device,
                   ptr stream) {
    return std::tuple_cat(std::make_tuple(deterministic, shared),
                          Workspace::args(workspace, bytes, device, stream));
  }
};

// A binding's body reads its Python arguments and returns the kernel call: a callable taking the
// tail's kernel arguments. typed(dtype, f) is that call for a float or double kernel, f(tag,
// tail...) with tag a null T*; the two-dtype form is mask pasting's (masks and boxes each float32
// or float64: the box arithmetic is in the boxes' own type, as torchvision's).
template <typename F> auto typed(DType dt, F f) {
  return [=](auto... tail) { return dispatch(dt, [&](auto tag) { return f(tag, tail...); }); };
}
template <typename F> auto typed(DType mask_dt, DType box_dt, F f) {
  return [=](auto... tail) {
    return dispatch(mask_dt, [&](auto mtag) {
      return dispatch(box_dt, [&](auto btag) { return f(mtag, btag, tail...); });
    });
  };
}

template <typename F> struct Params : Params<decltype(&F::operator())> {};
template <typename R, typename... A> struct Params<R (*)(A...)> {
  using type = std::tuple<A...>;
};
template <typename R, typename C, typename... A>
struct Params<R (C::*)(A...) const> : Params<R (*)(A...)> {};

// The function pybind11 binds: the body's arguments then the tail's. The body runs with the GIL
// (it may read Python objects), the kernel call it returns without.
template <typename Tail, typename Body, typename A = typename Params<Body>::type,
          typename X = typename Params<decltype(&Tail::args)>::type>
struct Bound;
template <typename Tail, typename Body, typename... A, typename... X>
struct Bound<Tail, Body, std::tuple<A...>, std::tuple<X...>> {
  Body body;
  auto operator()(A... a, X... x) const {
    auto call = body(std::move(a)...);
    py::gil_scoped_release release;
    return std::apply(call, Tail::args(x...));
  }
};

// One docstring, or the cpu and cuda ones where they differ.
struct Docs {
  Docs(const char* both) : cpu(both), cuda(both) {}
  Docs(const char* cpu, const char* cuda) : cpu(cpu), cuda(cuda) {}
  const char* cpu;
  const char* cuda;
};

struct Backends {
  py::module_ cpu, cuda;  // cuda: only with FASTDET_WITH_CUDA

  // Binds a kernel both backends have: in cpu with the body's arguments, in cuda with Tail's
  // appended. The body calls the kernel unqualified with the tail's kernel arguments appended
  // (none for the CPU): those extra arguments make it fastdet::cuda's overload.
  template <typename Tail, typename Body, typename... Arg>
  void def(const char* name, Docs doc, Body body, const Arg&... args) {
    add<NoTail>(cpu, name, doc.cpu, body, args...);
#ifdef FASTDET_WITH_CUDA
    add<Tail>(cuda, name, doc.cuda, body, args...);
#endif
  }
  template <typename Tail, typename Body, typename... Arg>
  static void add(py::module_& m, const char* name, const char* doc, Body body,
                  const Arg&... args) {
    std::apply([&](auto... tail) { m.def(name, Bound<Tail, Body>{body}, args..., tail..., doc); },
               Tail::names());
  }
};

// ---------------------------------------------------------------- the kernels

using namespace fastdet::cpu;
using namespace fastdet::cuda;
namespace cu = fastdet::cuda;

void bind_kernels(Backends& ops) {
  py::module_& c = ops.cpu;
  c.def("max_threads", &fastdet::cpu::max_threads, "Threads a kernel may use (OpenMP).");
  c.def("set_num_threads", &fastdet::cpu::set_num_threads, "n"_a,
        "Sets the number of threads later kernels use.");
  c.def(
      "count_nonfinite",
      [](DType dt, ptr x, int64_t n) {
        return dispatch(dt, [&](auto tag) {
          FD_T;
          return fastdet::cpu::count_nonfinite(P<T>(x), n);
        });
      },
      "dtype"_a, "x"_a, "n"_a, "Number of NaN and inf among the n values at x.", nogil);
  c.def(
      "count_beyond",
      [](DType dt, ptr x, int64_t n, double limit) {
        return dispatch(dt, [&](auto tag) {
          FD_T;
          return fastdet::cpu::count_beyond(P<T>(x), n, limit);
        });
      },
      "dtype"_a, "x"_a, "n"_a, "limit"_a,
      "Number of NaN, inf and |v| > limit among the n values at x.", nogil);
#ifdef FASTDET_WITH_CUDA
  py::module_& g = ops.cuda;
  g.def("available", &cu::available, "True when a CUDA device can be used.");
  g.def("device_count", &cu::device_count, "Number of visible CUDA devices.");
  g.def("version", &cu::version, "CUDA runtime version compiled in, e.g. '13.0'.");
  g.def("archs", &cu::archs, "CUDA architectures compiled in, e.g. '90;100'.");
  g.def("nms_workspace_bytes", &cu::nms_workspace_bytes, "n"_a,
        "Workspace bytes nms needs for n boxes.");
  g.def("batched_nms_workspace_bytes", &cu::batched_nms_workspace_bytes, "n"_a,
        "Workspace bytes batched_nms needs for n boxes.");
  g.def("suppress_contained_workspace_bytes", &cu::suppress_contained_workspace_bytes, "n"_a,
        "Workspace bytes suppress_contained needs for n boxes.");
  g.def("soft_nms_workspace_bytes", &cu::soft_nms_workspace_bytes, "n"_a,
        "Workspace bytes soft_nms needs for n boxes.");
  g.def("roi_align_backward_workspace_bytes", &cu::roi_align_backward_workspace_bytes,
        "batch_size"_a, "channels"_a, "height"_a, "width"_a, "deterministic"_a,
        "Workspace bytes roi_align_backward needs (0 unless deterministic).");
#endif

  ops.def<Stream>(
      "box_area", "Areas of n boxes into out [n] (inverted boxes: 0).",
      [](DType dt, ptr b, int64_t n, ptr out) {
        return typed(dt, [=](auto tag, auto... tail) {
          FD_T;
          box_area(P<T>(b), n, P<T>(out), tail...);
        });
      },
      "dtype"_a, "boxes"_a, "n"_a, "out"_a);
  ops.def<Stream>(
      "box_iou", "IoU of every pair of n and m boxes into out [n, m].",
      [](DType dt, ptr a, int64_t n, ptr b, int64_t m, ptr out) {
        return typed(dt, [=](auto tag, auto... tail) {
          FD_T;
          box_iou(P<T>(a), n, P<T>(b), m, P<T>(out), tail...);
        });
      },
      "dtype"_a, "boxes1"_a, "n"_a, "boxes2"_a, "m"_a, "out"_a);
  ops.def<Stream>(
      "generalized_box_iou", "Generalized IoU of every pair of n and m boxes into out [n, m].",
      [](DType dt, ptr a, int64_t n, ptr b, int64_t m, ptr out) {
        return typed(dt, [=](auto tag, auto... tail) {
          FD_T;
          generalized_box_iou(P<T>(a), n, P<T>(b), m, P<T>(out), tail...);
        });
      },
      "dtype"_a, "boxes1"_a, "n"_a, "boxes2"_a, "m"_a, "out"_a);
  ops.def<Stream>(
      "pairwise_iou", "IoU family of [batch, n, 4] and [batch, m, 4] boxes into out [batch, n, m].",
      [](fastdet::IouKind kind, DType dt, ptr a, ptr b, int64_t batch, int64_t n, int64_t m,
         double eps, ptr out) {
        return typed(dt, [=](auto tag, auto... tail) {
          FD_T;
          pairwise_iou(kind, P<T>(a), P<T>(b), batch, n, m, eps, P<T>(out), tail...);
        });
      },
      "kind"_a, "dtype"_a, "boxes1"_a, "boxes2"_a, "batch"_a, "n"_a, "m"_a, "eps"_a, "out"_a);
  ops.def<Workspace>(
      "nms",
      {"Greedy NMS: kept indices into keep [n]; returns their count or a negative Status.",
       "Greedy NMS: kept indices into keep [n]; returns their count or a negative Status "
       "(syncs)."},
      [](DType dt, ptr b, ptr s, int64_t n, double thr, ptr keep) {
        return typed(dt, [=](auto tag, auto... tail) {
          FD_T;
          return nms(P<T>(b), P<T>(s), n, thr, P<int64_t>(keep), tail...);
        });
      },
      "dtype"_a, "boxes"_a, "scores"_a, "n"_a, "iou_threshold"_a, "keep"_a);
  ops.def<Workspace>(
      "batched_nms",
      "NMS per int64 category idxs: kept indices into keep; returns their count or a Status.",
      [](DType dt, ptr b, ptr s, ptr idx, int64_t n, double thr, ptr keep) {
        return typed(dt, [=](auto tag, auto... tail) {
          FD_T;
          return batched_nms(P<T>(b), P<T>(s), P<int64_t>(idx), n, thr, P<int64_t>(keep), tail...);
        });
      },
      "dtype"_a, "boxes"_a, "scores"_a, "idxs"_a, "n"_a, "iou_threshold"_a, "keep"_a);
  ops.def<Workspace>(
      "suppress_contained",
      "Containment suppression per int64 category idxs: kept indices into keep; returns their "
      "count or a Status.",
      [](DType dt, ptr b, ptr s, ptr idx, int64_t n, double fraction, ptr keep) {
        return typed(dt, [=](auto tag, auto... tail) {
          FD_T;
          return suppress_contained(P<T>(b), P<T>(s), P<int64_t>(idx), n, fraction,
                                    P<int64_t>(keep), tail...);
        });
      },
      "dtype"_a, "boxes"_a, "scores"_a, "idxs"_a, "n"_a, "fraction"_a, "keep"_a);
  ops.def<Workspace>(
      "soft_nms", "Soft-NMS: selected indices and decayed scores; returns their count or a Status.",
      [](DType dt, ptr b, ptr s, int64_t n, double thr, double sigma, double sthr,
         fastdet::SoftNmsMethod method, ptr keep, ptr out_scores) {
        return typed(dt, [=](auto tag, auto... tail) {
          FD_T;
          return soft_nms(P<T>(b), P<T>(s), n, thr, sigma, sthr, method, P<int64_t>(keep),
                          P<T>(out_scores), tail...);
        });
      },
      "dtype"_a, "boxes"_a, "scores"_a, "n"_a, "iou_threshold"_a, "sigma"_a, "score_threshold"_a,
      "method"_a, "keep"_a, "out_scores"_a);
  ops.def<Stream>(
      "roi_align_forward",
      "RoIAlign of input [N, C, H, W] over rois [K, 5] into out [K, C, PH, PW].",
      [](DType dt, ptr x, int64_t N, int64_t C, int64_t H, int64_t W, ptr rois, int64_t K,
         int64_t PH, int64_t PW, double scale, int64_t sr, bool aligned, ptr out) {
        return typed(dt, [=](auto tag, auto... tail) {
          FD_T;
          roi_align_forward(P<T>(x), N, C, H, W, P<T>(rois), K, PH, PW, scale, sr, aligned,
                            P<T>(out), tail...);
        });
      },
      "dtype"_a, "input"_a, "batch_size"_a, "channels"_a, "height"_a, "width"_a, "rois"_a,
      "num_rois"_a, "pooled_height"_a, "pooled_width"_a, "spatial_scale"_a, "sampling_ratio"_a,
      "aligned"_a, "out"_a);
  ops.def<RoiAlignBackward>(
      "roi_align_backward",
      {"RoIAlign's input gradient, overwriting grad_input [N, C, H, W] (deterministic).",
       "RoIAlign's input gradient, overwriting grad_input [N, C, H, W]."},
      [](DType dt, ptr g, int64_t N, int64_t C, int64_t H, int64_t W, ptr rois, int64_t K,
         int64_t PH, int64_t PW, double scale, int64_t sr, bool aligned, ptr gin) {
        return typed(dt, [=](auto tag, auto... tail) {
          FD_T;
          roi_align_backward(P<T>(g), N, C, H, W, P<T>(rois), K, PH, PW, scale, sr, aligned,
                             P<T>(gin), tail...);
        });
      },
      "dtype"_a, "grad_output"_a, "batch_size"_a, "channels"_a, "height"_a, "width"_a, "rois"_a,
      "num_rois"_a, "pooled_height"_a, "pooled_width"_a, "spatial_scale"_a, "sampling_ratio"_a,
      "aligned"_a, "grad_input"_a);
  ops.def<Stream>(
      "roi_pool_forward",
      "RoIPool of input [N, C, H, W] over rois [K, 5] into out and int32 argmax [K, C, PH, PW].",
      [](DType dt, ptr x, int64_t N, int64_t C, int64_t H, int64_t W, ptr rois, int64_t K,
         int64_t PH, int64_t PW, double scale, ptr out, ptr argmax) {
        return typed(dt, [=](auto tag, auto... tail) {
          FD_T;
          roi_pool_forward(P<T>(x), N, C, H, W, P<T>(rois), K, PH, PW, scale, P<T>(out),
                           P<int32_t>(argmax), tail...);
        });
      },
      "dtype"_a, "input"_a, "batch_size"_a, "channels"_a, "height"_a, "width"_a, "rois"_a,
      "num_rois"_a, "pooled_height"_a, "pooled_width"_a, "spatial_scale"_a, "out"_a, "argmax"_a);
  ops.def<Stream>(
      "roi_pool_backward",
      {"RoIPool's input gradient, overwriting grad_input [N, C, H, W] (deterministic).",
       "RoIPool's input gradient, overwriting grad_input [N, C, H, W] (float atomics)."},
      [](DType dt, ptr g, ptr argmax, ptr rois, int64_t K, int64_t N, int64_t C, int64_t H,
         int64_t W, int64_t PH, int64_t PW, ptr gin) {
        return typed(dt, [=](auto tag, auto... tail) {
          FD_T;
          roi_pool_backward(P<T>(g), P<int32_t>(argmax), P<T>(rois), K, N, C, H, W, PH, PW,
                            P<T>(gin), tail...);
        });
      },
      "dtype"_a, "grad_output"_a, "argmax"_a, "rois"_a, "num_rois"_a, "batch_size"_a, "channels"_a,
      "height"_a, "width"_a, "pooled_height"_a, "pooled_width"_a, "grad_input"_a);
  ops.def<Stream>(
      "grid_anchors", "One level's anchors: base [A, 4] shifted over the grid.",
      [](DType dt, ptr base, int64_t A, int64_t gh, int64_t gw, double sh, double sw, ptr out) {
        return typed(dt, [=](auto tag, auto... tail) {
          FD_T;
          grid_anchors(P<T>(base), A, gh, gw, sh, sw, P<T>(out), tail...);
        });
      },
      "dtype"_a, "base"_a, "num_base"_a, "grid_height"_a, "grid_width"_a, "stride_height"_a,
      "stride_width"_a, "out"_a);
  ops.def<Stream>(
      "encode_boxes", "BoxCoder targets of n gt boxes against n proposals into out [n, 4].",
      [](DType dt, ptr gt, ptr prop, int64_t n, Weights w, ptr out) {
        return typed(dt, [=](auto tag, auto... tail) {
          FD_T;
          encode_boxes(P<T>(gt), P<T>(prop), n, w.data(), P<T>(out), tail...);
        });
      },
      "dtype"_a, "gt"_a, "proposals"_a, "n"_a, "weights"_a, "out"_a);
  ops.def<Stream>(
      "decode_boxes", "BoxCoder decode of codes [n, 4k] against boxes [n, 4] into out [n, 4k].",
      [](DType dt, ptr codes, ptr boxes, int64_t n, int64_t k, Weights w, double clip, ptr out) {
        return typed(dt, [=](auto tag, auto... tail) {
          FD_T;
          decode_boxes(P<T>(codes), P<T>(boxes), n, k, w.data(), clip, P<T>(out), tail...);
        });
      },
      "dtype"_a, "codes"_a, "boxes"_a, "n"_a, "k"_a, "weights"_a, "clip"_a, "out"_a);
  ops.def<Stream>(
      "clip_boxes", "n boxes clipped to [0, width] x [0, height] into out [n, 4].",
      [](DType dt, ptr b, int64_t n, double h, double w, ptr out) {
        return typed(dt, [=](auto tag, auto... tail) {
          FD_T;
          clip_boxes(P<T>(b), n, h, w, P<T>(out), tail...);
        });
      },
      "dtype"_a, "boxes"_a, "n"_a, "height"_a, "width"_a, "out"_a);

  c.def(
      "remove_small_boxes",
      [](DType dt, ptr b, int64_t n, double min_size, ptr keep) {
        return dispatch(dt, [&](auto tag) {
          FD_T;
          return fastdet::cpu::remove_small_boxes(P<T>(b), n, min_size, P<int64_t>(keep));
        });
      },
      "dtype"_a, "boxes"_a, "n"_a, "min_size"_a, "keep"_a,
      "Indices of boxes with both sides >= min_size into keep; returns their count.", nogil);
  c.def(
      "weighted_boxes_fusion",
      [](ptr b, ptr s, ptr labels, ptr models, ptr skip, int64_t n, ptr weights, int64_t n_models,
         double weight_sum, double weight_max, double iou_thr, int conf_type, bool overflow,
         ptr out_b, ptr out_s, ptr out_l) {
        return fastdet::cpu::weighted_boxes_fusion(
            P<double>(b), P<double>(s), P<int64_t>(labels), P<int64_t>(models), P<uint8_t>(skip), n,
            P<double>(weights), n_models, weight_sum, weight_max, iou_thr, conf_type, overflow,
            P<double>(out_b), P<double>(out_s), P<int64_t>(out_l));
      },
      "boxes"_a, "scores"_a, "labels"_a, "models"_a, "skip"_a, "n"_a, "weights"_a, "n_models"_a,
      "weight_sum"_a, "weight_max"_a, "iou_thr"_a, "conf_type"_a, "allows_overflow"_a,
      "out_boxes"_a, "out_scores"_a, "out_labels"_a,
      "Weighted boxes fusion of n float64 boxes: fused boxes, scores, labels; count or a Status.",
      nogil);
#ifdef FASTDET_WITH_CUDA
  g.def("wbf_cluster_workspace_bytes", &cu::wbf_cluster_workspace_bytes, "k"_a,
        "Workspace bytes wbf_cluster needs for k boxes.");
#endif
  ops.def<Workspace>(
      "wbf_cluster",
      {"Weighted boxes fusion's clustering of sorted label segments (every box vs every cluster).",
       "Weighted boxes fusion's clustering of sorted label segments: one block per segment."},
      [](ptr b, ptr ws, ptr w, ptr pos, ptr seg, int64_t nseg, double iou_thr, int conf_type,
         ptr ob, ptr os, ptr ow, ptr oc, ptr of, ptr ncl, ptr asg) {
        return [=](auto... tail) {
          wbf_cluster(P<double>(b), P<double>(ws), P<double>(w), P<int64_t>(pos), P<int64_t>(seg),
                      nseg, iou_thr, conf_type, P<double>(ob), P<double>(os), P<double>(ow),
                      P<int64_t>(oc), P<int64_t>(of), P<int64_t>(ncl), P<int64_t>(asg), tail...);
        };
      },
      "boxes"_a, "ws"_a, "w"_a, "pos"_a, "seg"_a, "nseg"_a, "iou_thr"_a, "conf_type"_a,
      "out_boxes"_a, "out_s"_a, "out_w"_a, "out_count"_a, "out_first"_a, "ncl"_a, "assign"_a);

#ifdef FASTDET_WITH_CUDA
  g.def(
      "nms_rotated_workspace_bytes",
      [](int64_t n) { return cu::nms_rotated_workspace_bytes(n, false); }, "n"_a,
      "Workspace bytes nms_rotated needs for n boxes (idxs 0).");
  g.def(
      "batched_nms_rotated_workspace_bytes",
      [](int64_t n) { return cu::nms_rotated_workspace_bytes(n, true); }, "n"_a,
      "Workspace bytes nms_rotated needs for n boxes with idxs.");
#endif
  ops.def<Stream>(
      "box_iou_rotated", "IoU of every pair of n and m rotated boxes [., 5] into out [n, m].",
      [](DType dt, ptr a, int64_t n, ptr b, int64_t m, ptr out) {
        return typed(dt, [=](auto tag, auto... tail) {
          FD_T;
          box_iou_rotated(P<T>(a), n, P<T>(b), m, P<T>(out), tail...);
        });
      },
      "dtype"_a, "boxes1"_a, "n"_a, "boxes2"_a, "m"_a, "out"_a);
  ops.def<Workspace>(
      "nms_rotated",
      {"Greedy NMS of rotated boxes [n, 5], per int64 category idxs unless idxs is 0: kept "
       "indices into keep; returns their count or a negative Status.",
       "Greedy NMS of rotated boxes [n, 5], per int64 category idxs unless idxs is 0: kept "
       "indices into keep; returns their count or a negative Status (syncs)."},
      [](DType dt, ptr b, ptr s, ptr idx, int64_t n, double thr, ptr keep) {
        return typed(dt, [=](auto tag, auto... tail) {
          FD_T;
          return nms_rotated(P<T>(b), P<T>(s), P<int64_t>(idx), n, thr, P<int64_t>(keep), tail...);
        });
      },
      "dtype"_a, "boxes"_a, "scores"_a, "idxs"_a, "n"_a, "iou_threshold"_a, "keep"_a);

  ops.def<Stream>(
      "paste_masks",
      "Masks [K, M, M] pasted into out [K, H, W] (probabilities, or uint8 prob > threshold).",
      [](DType dt, DType bdt, ptr masks, int64_t K, int64_t M, ptr boxes, int64_t padding,
         int64_t H, int64_t W, py::object threshold, ptr out) {
        const bool binary = !threshold.is_none();
        const double thr = binary ? threshold.cast<double>() : 0.0;
        return typed(dt, bdt, [=](auto mtag, auto btag, auto... tail) {
          FD_TB;
          if (binary)
            paste_masks_binary(P<T>(masks), K, M, P<B>(boxes), padding, H, W, thr, P<uint8_t>(out),
                               tail...);
          else
            paste_masks(P<T>(masks), K, M, P<B>(boxes), padding, H, W, P<T>(out), tail...);
        });
      },
      "dtype"_a, "boxes_dtype"_a, "masks"_a, "num_masks"_a, "mask_size"_a, "boxes"_a, "padding"_a,
      "height"_a, "width"_a, "threshold"_a, "out"_a);
  ops.def<Stream>(
      "masks_to_labels",
      "int32 label image out [H, W] of masks [K, M, M] in boxes (boxes 0: masks [K, H, W]).",
      [](DType dt, DType bdt, ptr masks, int64_t K, int64_t M, ptr boxes, ptr order,
         int64_t padding, int64_t H, int64_t W, double threshold, ptr out) {
        return typed(dt, bdt, [=](auto mtag, auto btag, auto... tail) {
          FD_TB;
          masks_to_labels(P<T>(masks), K, M, P<B>(boxes), P<int64_t>(order), padding, H, W,
                          threshold, P<int32_t>(out), tail...);
        });
      },
      "dtype"_a, "boxes_dtype"_a, "masks"_a, "num_masks"_a, "mask_size"_a, "boxes"_a, "order"_a,
      "padding"_a, "height"_a, "width"_a, "threshold"_a, "out"_a);
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastdet compiled kernels";
  m.attr("__version__") = FASTDET_VERSION;
#ifdef _OPENMP
  m.attr("openmp") = true;
#else
  m.attr("openmp") = false;
#endif
  bind_enums(m);
  Backends ops;
  ops.cpu = m.def_submodule(
      "cpu", "OpenMP kernels. Array arguments are data addresses (int) of C-contiguous arrays.");
#ifdef FASTDET_WITH_CUDA
  m.attr("with_cuda") = true;
  ops.cuda = m.def_submodule("cuda",
                             "CUDA kernels. Array arguments are device addresses (int); each call "
                             "takes (device, stream) last, stream a cudaStream_t as an int.");
#else
  m.attr("with_cuda") = false;
#endif
  bind_kernels(ops);
}
