// Entropy-dispatched routing (docs/method.md §1 and §3), semantics of
// alter_kernels/reference/routing.py.
//
// Per token n with entropy H and router logits u (E experts), high = H >= theta:
//   train: w = softmax(u / tau), tau = tau_high if high else tau_low (dense).
//   infer, low:  one-hot on argmax u (lowest index on ties).
//   infer, high: w = softmax(u / tau_high); keep retain_index and the min(top_k, E - 1) largest
//                w among the other experts (lowest index on ties), zero the rest, renormalise.
// Arithmetic in fp32 like the reference; E is small, so one thread handles a whole row.
#include <algorithm>
#include <limits>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "common.h"
#include "kernels.h"

namespace alter {
namespace {

inline double load_entropy(const void* p, int dtype, int64_t i) {
  switch (dtype) {
    case kFloat32:
      return static_cast<const float*>(p)[i];
    case kBFloat16:
      return bf16_to_float(static_cast<const uint16_t*>(p)[i]);
    case kFloat16:
      return f16_to_float(static_cast<const uint16_t*>(p)[i]);
    default:
      return static_cast<const double*>(p)[i];
  }
}

// w = softmax(u / tau) in fp32.
inline void softmax_scaled(const float* u, int64_t E, float tau, float* w) {
  float mx = kNegInf;
  for (int64_t e = 0; e < E; ++e) {
    w[e] = u[e] / tau;
    mx = w[e] > mx ? w[e] : mx;
  }
  float sum = 0.0f;
  for (int64_t e = 0; e < E; ++e) {
    w[e] = std::exp(w[e] - mx);
    sum += w[e];
  }
  for (int64_t e = 0; e < E; ++e) w[e] /= sum;
}

template <typename Src>
void route_rows(const void* entropy, int entropy_dtype, uintptr_t router_logits, int64_t n_rows, int64_t E,
                double theta, float tau_high, float tau_low, int64_t top_k, int64_t retain, bool train, float* gates,
                int threads) {
  const auto* base = reinterpret_cast<const typename Src::Raw*>(router_logits);
  const int64_t k = std::min<int64_t>(top_k, E - 1);
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> u(E), w(E);
    std::vector<char> keep(E);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < n_rows; ++r) {
      for (int64_t e = 0; e < E; ++e) u[e] = Src::get(base[r * E + e]);
      float* out = gates + r * E;
      const double h = load_entropy(entropy, entropy_dtype, r);
      if (h != h) {  // NaN entropy: NaN gates (NaN in, NaN out; docs/method.md §2)
        std::fill(out, out + E, std::numeric_limits<float>::quiet_NaN());
        continue;
      }
      const bool high = h >= theta;
      if (train) {
        softmax_scaled(u.data(), E, high ? tau_high : tau_low, out);
        continue;
      }
      if (!high) {
        int64_t best = 0;
        for (int64_t e = 1; e < E; ++e)
          if (u[e] > u[best]) best = e;
        std::fill(out, out + E, 0.0f);
        out[best] = 1.0f;
        continue;
      }
      for (int64_t e = 0; e < E; ++e) w[e] = u[e] / tau_high;      // softmax order = order of u / tau
      std::fill(keep.begin(), keep.end(), 0);
      keep[retain] = 1;
      for (int64_t pick = 0; pick < k; ++pick) {
        int64_t best = E;  // k <= E - 1, so an expert is always left to pick
        for (int64_t e = 0; e < E; ++e)
          if (!keep[e] && (best == E || w[e] > w[best])) best = e;
        if (best == E) break;
        keep[best] = 1;
      }
      // softmax over the kept experts: the renormalised kept weights, without a 0 / 0 when the
      // retain expert's weight underflows
      float mx = kNegInf;
      for (int64_t e = 0; e < E; ++e)
        if (keep[e] && w[e] > mx) mx = w[e];
      float sum = 0.0f;
      for (int64_t e = 0; e < E; ++e) {
        out[e] = keep[e] ? std::exp(w[e] - mx) : 0.0f;
        sum += out[e];
      }
      for (int64_t e = 0; e < E; ++e) out[e] /= sum;
    }
  }
}

}  // namespace

void route(uintptr_t entropy, int entropy_dtype, uintptr_t router_logits, int router_dtype, int64_t n_rows,
           int64_t n_experts, double theta, double tau_high, double tau_low, int64_t top_k, int64_t retain_index,
           int mode, uintptr_t gates, int num_threads) {
  if (n_experts < 1) throw std::invalid_argument("router_logits must have at least one expert column");
  if (retain_index < 0 || retain_index >= n_experts)
    throw std::invalid_argument("retain_index must be in [0, " + std::to_string(n_experts) + "), got " +
                                std::to_string(retain_index));
  if (top_k < 0) throw std::invalid_argument("top_k must be >= 0, got " + std::to_string(top_k));
  if (!(tau_high > 0.0) || !(tau_low > 0.0)) throw std::invalid_argument("tau_high and tau_low must be > 0");
  if (mode != 0 && mode != 1) throw std::invalid_argument("mode must be 0 (infer) or 1 (train)");
  if (entropy_dtype != kFloat32 && entropy_dtype != kBFloat16 && entropy_dtype != kFloat16 &&
      entropy_dtype != kFloat64)
    throw std::invalid_argument("entropy dtype code " + std::to_string(entropy_dtype) + " is not a float type");
  if (n_rows <= 0) return;
  const void* ent = reinterpret_cast<const void*>(entropy);
  auto* out = reinterpret_cast<float*>(gates);
  const int threads = threads_for(num_threads, n_rows, n_rows * n_experts * 64);
  const float th = static_cast<float>(tau_high), tl = static_cast<float>(tau_low);
  const bool train = mode == 1;
  switch (router_dtype) {
    case kFloat32:
      route_rows<F32>(ent, entropy_dtype, router_logits, n_rows, n_experts, theta, th, tl, top_k, retain_index,
                      train, out, threads);
      break;
    case kBFloat16:
      route_rows<BF16>(ent, entropy_dtype, router_logits, n_rows, n_experts, theta, th, tl, top_k, retain_index,
                       train, out, threads);
      break;
    case kFloat16:
      route_rows<F16>(ent, entropy_dtype, router_logits, n_rows, n_experts, theta, th, tl, top_k, retain_index,
                      train, out, threads);
      break;
    default:
      throw std::invalid_argument("router_logits dtype code " + std::to_string(router_dtype) +
                                  " is not supported (float32, bfloat16 or float16)");
  }
}

}  // namespace alter
