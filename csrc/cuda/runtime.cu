// Runtime queries: safe to call on a machine without a GPU or driver (they report 0 / false).
#include <string>

#include "common.cuh"
#include "fastdet/ops.h"

#ifndef FASTDET_CUDA_ARCHS
#define FASTDET_CUDA_ARCHS "unknown"
#endif

namespace fastdet::cuda {

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // no driver / no device is an answer here, not a sticky error
    return 0;
  }
  return n;
}

bool available() { return device_count() > 0; }

// The runtime linked in (static), e.g. "13.0"; needs no device.
const char* version() {
  static const std::string v = [] {
    int r = 0;
    if (cudaRuntimeGetVersion(&r) != cudaSuccess) return std::string("unknown");
    return std::to_string(r / 1000) + "." + std::to_string(r % 1000 / 10);
  }();
  return v.c_str();
}

const char* archs() { return FASTDET_CUDA_ARCHS; }

}  // namespace fastdet::cuda
