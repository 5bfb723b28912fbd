// Stable descending argsort of float/double scores (LSD radix sort on order-preserving keys).
// Ties keep the lower index first, as torch.sort(stable=True, descending=True) does.
#pragma once
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace fastdet::cpu {

template <typename T> inline auto descending_key(T v) {
  using U = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  if (v == T(0)) v = T(0);  // -0.0 and +0.0 tie, as in a comparison sort
  U u;
  std::memcpy(&u, &v, sizeof(T));
  const U sign = U(1) << (8 * sizeof(T) - 1);
  u = (u & sign) ? ~u : (u | sign);  // ascending unsigned order == ascending float order
  return static_cast<U>(~u);         // descending
}

// order[k] = index of the k-th largest score. Scores must be finite (or at least not NaN).
template <typename T> void argsort_descending(const T* scores, int64_t n, int64_t* order) {
  using U = decltype(descending_key(T(0)));
  std::vector<U> key(n), key2(n);
  std::vector<int64_t> tmp(n);
  for (int64_t i = 0; i < n; ++i) {
    key[i] = descending_key(scores[i]);
    order[i] = i;
  }
  U* k_in = key.data();
  U* k_out = key2.data();
  int64_t* v_in = order;
  int64_t* v_out = tmp.data();
  for (unsigned shift = 0; shift < 8 * sizeof(U); shift += 8) {
    int64_t count[257] = {0};
    for (int64_t i = 0; i < n; ++i) ++count[((k_in[i] >> shift) & 0xFF) + 1];
    bool one_bucket = false;
    for (int b = 1; b <= 256; ++b) one_bucket |= (count[b] == n);
    if (one_bucket) continue;  // this byte is the same everywhere: the pass would not move anything
    for (int b = 0; b < 256; ++b) count[b + 1] += count[b];
    for (int64_t i = 0; i < n; ++i) {
      int64_t dst = count[(k_in[i] >> shift) & 0xFF]++;
      k_out[dst] = k_in[i];
      v_out[dst] = v_in[i];
    }
    std::swap(k_in, k_out);
    std::swap(v_in, v_out);
  }
  if (v_in != order) std::memcpy(order, v_in, n * sizeof(int64_t));
}

}  // namespace fastdet::cpu
