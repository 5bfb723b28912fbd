// OpenMP helpers shared by the CPU kernels.
#pragma once
#include <cstdint>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "fastdet/ops.h"

#if defined(__linux__)
#include <sys/mman.h>
#endif

// Hot loops get an AVX2 clone chosen at load time; the default clone keeps the module portable.
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define FASTDET_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define FASTDET_CLONES
#endif

namespace fastdet::cpu {

// Threads for a loop of `work` units: one thread when the loop is too small to pay for a team.
inline int threads_for(int64_t work, int64_t grain = 1 << 14) {
  int64_t t = work / grain;
  int mt = max_threads();
  return t < 1 ? 1 : (t < mt ? static_cast<int>(t) : mt);
}

// The calling thread's number within its team (0 outside one), e.g. to pick its scratch slice.
inline int thread_id() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// A large output fresh from the allocator is untouched mmap memory: writing it costs one page
// fault per 4 KiB, more than the kernel itself (64 MB: ~25 ms of faults). Asking for huge pages
// first makes that one fault per 2 MiB. A hint only: failure changes nothing.
inline void hint_huge_pages(void* p, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const uintptr_t huge = uintptr_t(2) << 20;
  if (bytes < 4 * huge) return;
  uintptr_t lo = (reinterpret_cast<uintptr_t>(p) + huge - 1) & ~(huge - 1);
  uintptr_t hi = (reinterpret_cast<uintptr_t>(p) + bytes) & ~(huge - 1);
  if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);
#else
  (void)p;
  (void)bytes;
#endif
}

}  // namespace fastdet::cpu
