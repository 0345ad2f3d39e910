// One-pass Tsallis entropy of softmax(z) over each row (docs/method.md §2).
//
// Per row, with a running maximum m:
//     s1 = sum_i exp(z_i - m),   sq = sum_i exp(q (z_i - m))       (q != 1)
//     t  = sum_i exp(z_i - m) (z_i - m)                             (q == 1, Shannon)
// When m grows to m' (d = m - m' < 0): s1 <- e^d s1, sq <- e^(q d) sq, t <- e^d (t + d s1).
// At the end sum_i p_i^q = sq / s1^q, so S_q = (1 - sq / s1^q) / (q - 1), and for q == 1
// H = log s1 - t / s1; lse = m + log s1. The same pass keeps the arg-max (first index on ties)
// and the runner-up value (second largest with multiplicity) when asked.
//
// A row is read chunk by chunk: pass 1 takes the chunk's maximum (and per-lane top-2), the
// accumulators are rescaled if the maximum grew, pass 2 sums the exponentials while the chunk
// is still in L1. A row holding a NaN gives NaN entropy, lse and runner-up.
// Within a chunk the sums are fp32 per-lane accumulators; across chunks double.
// Exponentials are 2^((z - m) log2 e) from common.h's exp2_nonpos (exactly 0 for -inf).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>

#include "common.h"
#include "kernels.h"

namespace alter {
namespace {

enum class Form { kShannon, kSquare, kGeneral };

struct RowResult {
  float entropy, lse, runner_up;
  int64_t argmax;
};

// Top-2 with multiplicity of everything seen so far, in 16 lanes (two vectors): per lane
// top2 <- max(top2, min(top1, x)), top1 <- max(top1, x).
struct Top2 {
  f32x8 top1a = splat8(kNegInf), top1b = splat8(kNegInf), top2a = splat8(kNegInf), top2b = splat8(kNegInf);

  void add(const float* x, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
      const f32x8 u = load8(x + i), v = load8(x + i + 8);
      top2a = max8(top2a, min8(top1a, u));
      top1a = max8(top1a, u);
      top2b = max8(top2b, min8(top1b, v));
      top1b = max8(top1b, v);
    }
    for (; i < n; ++i) {  // the tail goes to lane 0
      const float v = x[i];
      const float lo = top1a[0] < v ? top1a[0] : v;
      top2a[0] = top2a[0] > lo ? top2a[0] : lo;
      top1a[0] = top1a[0] > v ? top1a[0] : v;
    }
  }

  float max() const { return hmax8(max8(top1a, top1b)); }

  // The second largest of the multiset: the first lane holding the maximum gives its top2,
  // every other lane its top1.
  float runner_up() const {
    float t1[16], t2[16];
    std::memcpy(t1, &top1a, sizeof top1a);
    std::memcpy(t1 + 8, &top1b, sizeof top1b);
    std::memcpy(t2, &top2a, sizeof top2a);
    std::memcpy(t2 + 8, &top2b, sizeof top2b);
    const float best = max();
    int at = 0;
    while (at < 16 && !(t1[at] == best)) ++at;
    if (at == 16) return kNegInf;
    float r = t2[at];
    for (int j = 0; j < 16; ++j)
      if (j != at) r = r > t1[j] ? r : t1[j];
    return r;
  }
};

// Whether any of x[0..n) is NaN (a straight loop the compiler vectorises: compare-unordered + or).
inline bool chunk_has_nan(const float* x, int64_t n) {
  int bad = 0;
  for (int64_t i = 0; i < n; ++i) bad |= static_cast<int>(x[i] != x[i]);
  return bad != 0;
}

inline double hsum(const float* lane) {
  double s = 0.0;
  for (int j = 0; j < kLanes; ++j) s += lane[j];
  return s;
}

// Adds exp(x - m) to s1 and exp(q (x - m)) (or (x - m) exp(x - m) for Shannon) to s2, as
// 2^((x - m) log2 e) and 2^((x - m) q log2 e).
template <Form F>
inline void chunk_sums(const float* x, int64_t n, float m, float q, double& s1, double& s2) {
  float a1[kLanes] = {0.0f};
  float a2[kLanes] = {0.0f};
  const float q_log2e = q * kLog2e;
  const float lo = opaque(kExpLow);  // Shannon: (x - m) >= lo keeps 0 * -inf out of the sum
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) {
      float d = x[i + j] - m;
      if (F == Form::kShannon) d = d < lo ? lo : d;
      const float e = exp2_nonpos(d * kLog2e);
      a1[j] += e;
      if (F == Form::kShannon) a2[j] += e * d;
      if (F == Form::kSquare) a2[j] += e * e;
      if (F == Form::kGeneral) a2[j] += exp2_nonpos(d * q_log2e);
    }
  for (; i < n; ++i) {
    float d = x[i] - m;
    if (F == Form::kShannon) d = d < lo ? lo : d;
    const float e = exp2_nonpos(d * kLog2e);
    a1[0] += e;
    if (F == Form::kShannon) a2[0] += e * d;
    if (F == Form::kSquare) a2[0] += e * e;
    if (F == Form::kGeneral) a2[0] += exp2_nonpos(d * q_log2e);
  }
  s1 += hsum(a1);
  s2 += hsum(a2);
}

template <typename Src, Form F, bool Stats>
RowResult entropy_row(const typename Src::Raw* row, int64_t vocab, double q, float* buf) {
  float m = kNegInf;
  double s1 = 0.0, s2 = 0.0;  // s2: sq, or t for Shannon
  int64_t arg = 0;
  bool nan_seen = false;
  Top2 top2;

  for (int64_t start = 0; start < vocab; start += kChunk) {
    const int64_t n = std::min(kChunk, vocab - start);
    const float* x = as_float<Src>(row + start, n, buf);
    nan_seen = nan_seen || chunk_has_nan(x, n);
    float m_new;
    if (Stats) {
      top2.add(x, n);
      m_new = top2.max();
    } else {
      m_new = chunk_max(x, n, m);
    }
    if (m_new > m) {
      if (Stats) {
        int64_t i = 0;
        while (i < n && !(x[i] == m_new)) ++i;
        arg = start + i;
      }
      if (m != kNegInf) {
        const double d = static_cast<double>(m) - static_cast<double>(m_new);
        const double scale = std::exp(d);
        if (F == Form::kShannon) {
          s2 = scale * (s2 + d * s1);
        } else {
          s2 *= std::exp(q * d);
        }
        s1 *= scale;
      }
      m = m_new;
    }
    if (m == kNegInf) continue;  // everything so far is -inf: nothing to add
    chunk_sums<F>(x, n, m, static_cast<float>(q), s1, s2);
  }

  RowResult r{0.0f, kNegInf, kNegInf, 0};
  if (nan_seen) {  // NaN in, NaN out (docs/method.md §2): the caller names the position
    const float nan = std::numeric_limits<float>::quiet_NaN();
    return RowResult{nan, nan, nan, arg};
  }
  if (m == kNegInf) return r;  // an all -inf row has no distribution: entropy 0
  const double log_s1 = std::log(s1);
  double h;
  if (F == Form::kShannon) {
    h = log_s1 - s2 / s1;
  } else {
    h = (1.0 - s2 / std::exp(q * log_s1)) / (q - 1.0);
  }
  r.entropy = static_cast<float>(h > 0.0 ? h : 0.0);
  if (Stats) {
    r.lse = static_cast<float>(static_cast<double>(m) + log_s1);
    r.argmax = arg;
    r.runner_up = top2.runner_up();
  }
  return r;
}

template <typename Src, Form F, bool Stats>
void entropy_rows(uintptr_t logits, int64_t n_rows, int64_t vocab, int64_t row_stride, double q, float* entropy,
                  float* lse, int64_t* argmax, float* runner_up, int threads) {
  const auto* base = reinterpret_cast<const typename Src::Raw*>(logits);
#pragma omp parallel num_threads(threads)
  {
    float buf[kChunk];
#pragma omp for schedule(static)
    for (int64_t r = 0; r < n_rows; ++r) {
      const RowResult res = entropy_row<Src, F, Stats>(base + r * row_stride, vocab, q, buf);
      entropy[r] = res.entropy;
      if (Stats) {
        lse[r] = res.lse;
        argmax[r] = res.argmax;
        runner_up[r] = res.runner_up;
      }
    }
  }
}

template <typename Src>
void dispatch_form(uintptr_t logits, int64_t n_rows, int64_t vocab, int64_t row_stride, double q, float* entropy,
                   float* lse, int64_t* argmax, float* runner_up, int threads) {
  const bool stats = lse != nullptr;
#define ALTER_ENTROPY_CASE(FORM)                                                                          \
  if (stats)                                                                                              \
    entropy_rows<Src, FORM, true>(logits, n_rows, vocab, row_stride, q, entropy, lse, argmax, runner_up,  \
                                  threads);                                                               \
  else                                                                                                    \
    entropy_rows<Src, FORM, false>(logits, n_rows, vocab, row_stride, q, entropy, lse, argmax, runner_up, \
                                   threads);
  if (q == 1.0) {
    ALTER_ENTROPY_CASE(Form::kShannon)
  } else if (q == 2.0) {
    ALTER_ENTROPY_CASE(Form::kSquare)
  } else {
    ALTER_ENTROPY_CASE(Form::kGeneral)
  }
#undef ALTER_ENTROPY_CASE
}

}  // namespace

void tsallis_entropy(uintptr_t logits, int dtype, int64_t n_rows, int64_t vocab, int64_t row_stride, double q,
                     uintptr_t entropy, uintptr_t lse, uintptr_t argmax, uintptr_t runner_up, int num_threads) {
  if (vocab <= 0) throw std::invalid_argument("logits must have a non-empty last (vocabulary) dimension");
  if (q <= 0.0 || !std::isfinite(q)) throw std::invalid_argument("q must be a finite number > 0");
  if (n_rows <= 0) return;
  auto* ent = reinterpret_cast<float*>(entropy);
  auto* lse_p = reinterpret_cast<float*>(lse);
  auto* arg_p = reinterpret_cast<int64_t*>(argmax);
  auto* run_p = reinterpret_cast<float*>(runner_up);
  const int threads = threads_for(num_threads, n_rows, n_rows * vocab);
  switch (dtype) {
    case kFloat32:
      dispatch_form<F32>(logits, n_rows, vocab, row_stride, q, ent, lse_p, arg_p, run_p, threads);
      break;
    case kBFloat16:
      dispatch_form<BF16>(logits, n_rows, vocab, row_stride, q, ent, lse_p, arg_p, run_p, threads);
      break;
    case kFloat16:
      dispatch_form<F16>(logits, n_rows, vocab, row_stride, q, ent, lse_p, arg_p, run_p, threads);
      break;
    default:
      throw std::invalid_argument("logits dtype code " + std::to_string(dtype) +
                                  " is not supported (float32, bfloat16 or float16)");
  }
}

}  // namespace alter
