// Private helpers for csrc/cuda/*.cu: error checks, a device guard, launch configuration and
// workspace carving. Not installed, not seen by bindings.cpp.
#pragma once
#include <cuda_runtime.h>

#include <climits>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace fastdet::cuda::detail {

[[noreturn]] inline void throw_cuda(cudaError_t err, const char* expr, const char* file, int line) {
  cudaGetLastError();  // clear a non-sticky error so the next op's launch check stays clean
  throw std::runtime_error(std::string("fastdet CUDA error at ") + file + ":" +
                           std::to_string(line) + " (" + expr + "): " + cudaGetErrorString(err));
}

}  // namespace fastdet::cuda::detail

#define FASTDET_CUDA_CHECK(expr)                                                    \
  do {                                                                              \
    cudaError_t fastdet_err_ = (expr);                                              \
    if (fastdet_err_ != cudaSuccess)                                                \
      ::fastdet::cuda::detail::throw_cuda(fastdet_err_, #expr, __FILE__, __LINE__); \
  } while (0)

// After every <<<...>>>: launch-configuration errors are only reported by cudaGetLastError.
#define FASTDET_CUDA_CHECK_LAUNCH() FASTDET_CUDA_CHECK(cudaGetLastError())

namespace fastdet::cuda::detail {

// Makes `device` current for the scope of an op and restores the caller's device after.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    FASTDET_CUDA_CHECK(cudaGetDevice(&prev_));
    if (prev_ != device) {
      FASTDET_CUDA_CHECK(cudaSetDevice(device));
      changed_ = true;
    }
  }
  ~DeviceGuard() {
    if (changed_) cudaSetDevice(prev_);  // a destructor must not throw
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = 0;
  bool changed_ = false;
};

inline cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }

inline int sm_count(int device) {
  int v = 0;
  FASTDET_CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, device));
  return v > 0 ? v : 1;
}

constexpr int kThreads = 256;
constexpr int kWarp = 32;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Blocks for a grid-stride loop over `work` items: enough to fill the GPU, never more than
// the work needs; the kernels loop over the rest.
inline unsigned grid_1d(int64_t work, int threads = kThreads) {
  int64_t b = ceil_div(work, threads);
  const int64_t cap = int64_t(1) << 20;
  return static_cast<unsigned>(b < 1 ? 1 : (b > cap ? cap : b));
}

// Kernels index boxes with int; the NMS family and roi counts must fit.
inline void require_int32(int64_t v, const char* what) {
  if (v > INT_MAX)
    throw std::invalid_argument(std::string("fastdet CUDA: ") + what + " = " + std::to_string(v) +
                                " exceeds 2^31 - 1");
}

constexpr size_t kAlign = 256;
inline size_t align_up(size_t v, size_t a = kAlign) { return (v + a - 1) / a * a; }

// Cuts a caller workspace into 256-byte aligned pieces. With base == nullptr it only measures,
// so one layout function serves both *_workspace_bytes and the op. The first piece is aligned
// on the absolute address, so bytes() includes kAlign of slack for an unaligned base.
class Carver {
 public:
  explicit Carver(void* base) : base_(static_cast<char*>(base)) {
    const uintptr_t b = reinterpret_cast<uintptr_t>(base_);
    off_ = base_ ? align_up(b) - b : 0;
  }
  template <typename U> U* take(size_t count) {
    off_ = align_up(off_);
    U* p = base_ ? reinterpret_cast<U*>(base_ + off_) : nullptr;
    off_ += count * sizeof(U);
    return p;
  }
  void* take_bytes(size_t bytes) { return take<unsigned char>(bytes); }
  size_t bytes() const { return align_up(off_) + (base_ ? 0 : kAlign); }
  size_t used() const { return align_up(off_); }  // measured from base_, alignment slack included

 private:
  char* base_;
  size_t off_ = 0;
};

// Count and non-finite flag of the NMS family: one 16-byte device-to-host copy per call.
struct NmsHeader {
  long long count;
  long long nonfinite;
};

// Boxes gathered into workspace, aligned for one vector load.
template <typename T> struct alignas(16) Box4 {
  T v[4];
};

}  // namespace fastdet::cuda::detail
