// Shared helpers of ALTER's CPU kernels: dtype codes, half/bfloat16 -> float conversion,
// a vectorisable exp for non-positive arguments, and the OpenMP thread choice.
//
// Everything here is header-only and written as plain scalar C++ whose loops GCC turns into
// SIMD code at -O3 (the build passes -fno-math-errno -fno-trapping-math; see setup.py).
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>

namespace alter {

// Element type of a tensor handed over as a raw pointer (alter_kernels/cpu/_common.py mirrors these).
enum DType : int { kFloat32 = 0, kBFloat16 = 1, kFloat16 = 2, kFloat64 = 3, kInt32 = 4, kInt64 = 5 };

// Lanes of the explicit per-lane accumulators: two AVX2 registers of fp32 (or four SSE ones).
constexpr int kLanes = 16;
// Elements of a row processed at a time: small enough to stay in L1 between the passes over it.
constexpr int64_t kChunk = 2048;

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

inline float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline uint32_t float_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

// bfloat16 is the top half of an IEEE float.
inline float bf16_to_float(uint16_t h) { return bits_to_float(static_cast<uint32_t>(h) << 16); }

// IEEE half -> float without branches (so that a loop over it vectorises): the exponent is
// re-biased by 127 - 15 = 112 for normal numbers and to 255 for inf/NaN; subnormal halves are
// exact small integers times 2^-24.
inline float f16_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t mag = h & 0x7fffu;
  const float normal = bits_to_float((mag << 13) + (112u << 23));
  const float special = bits_to_float((mag << 13) + (224u << 23));
  const float subnormal = static_cast<float>(static_cast<int32_t>(mag)) * 5.9604644775390625e-08f;
  const float r = mag >= 0x7c00u ? special : (mag < 0x0400u ? subnormal : normal);
  return bits_to_float(float_to_bits(r) | sign);
}

// Source element types. Each converts one element to float; `Raw` is its storage type.
struct F32 {
  using Raw = float;
  static float get(Raw v) { return v; }
};
struct BF16 {
  using Raw = uint16_t;
  static float get(Raw v) { return bf16_to_float(v); }
};
struct F16 {
  using Raw = uint16_t;
  static float get(Raw v) { return f16_to_float(v); }
};

// Eight floats as one GCC/Clang vector (one AVX register, two SSE ones). The max and top-2
// scans use it explicitly: from scalar per-lane code GCC keeps 16 scalar max chains
// (vmaxss, ~9x slower than vmaxps), because it will not vectorise a MAX reduction that must
// keep NaN semantics.
typedef float f32x8 __attribute__((vector_size(32)));
#if defined(__GNUC__) && !defined(__clang__)
// Without AVX GCC notes that returning f32x8 changes the ABI: irrelevant for these inline helpers.
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

inline f32x8 load8(const float* p) {
  f32x8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline f32x8 splat8(float v) { return f32x8{v, v, v, v, v, v, v, v}; }
inline f32x8 max8(f32x8 a, f32x8 b) { return a > b ? a : b; }
inline f32x8 min8(f32x8 a, f32x8 b) { return a < b ? a : b; }
inline float hmax8(f32x8 v) {
  float m = v[0];
  for (int j = 1; j < 8; ++j) m = m > v[j] ? m : v[j];
  return m;
}

// max(init, x[0], ..., x[n - 1]), 16 elements a step.
inline float chunk_max(const float* x, int64_t n, float init) {
  f32x8 a = splat8(init), b = a;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    a = max8(a, load8(x + i));
    b = max8(b, load8(x + i + 8));
  }
  float m = hmax8(max8(a, b));
  for (; i < n; ++i) m = m > x[i] ? m : x[i];
  return m;
}

// A pointer to n consecutive fp32 values of src: src itself for fp32, else buf after an
// (auto-vectorised) conversion. buf must hold kChunk floats.
template <typename Src>
inline const float* as_float(const typename Src::Raw* src, int64_t n, float* buf) {
  for (int64_t i = 0; i < n; ++i) buf[i] = Src::get(src[i]);
  return buf;
}
template <>
inline const float* as_float<F32>(const float* src, int64_t, float*) {
  return src;
}

constexpr float kLog2e = 1.44269504088896341f;

// 2^x for x <= 0 (up to x = 0.5 is fine), to about 3 ulp, as straight-line float code that GCC
// vectorises. x = n + f with n = round(x), |f| <= 1/2; 2^f = 1 + f P(f), P of degree 5 with
// coefficients fitted for this file (least squares reweighted towards the minimax relative
// error on [-1/2, 1/2], then rounded to fp32: max relative error 1.6e-7 including rounding);
// 2^n is built in the exponent field. Arguments below -127 (including -inf) are clamped to
// -127, where 2^n is the bit pattern 0: the result is exactly 0 there (2^-126.5 and below
// flush to 0, which no sum of terms <= 1 that contains a 1 can notice), and 2^0 is exactly 1.
inline float exp2_nonpos(float x) {
  x = x < -127.0f ? -127.0f : x;
  const float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float shifted = x + kRound;
  const int32_t n = static_cast<int32_t>(float_to_bits(shifted)) - static_cast<int32_t>(float_to_bits(kRound));
  const float f = x - (shifted - kRound);
  // Estrin's scheme: short dependency chains, so out-of-order execution overlaps many calls
  const float f2 = f * f;
  const float f4 = f2 * f2;
  const float p01 = 1.0f + f * 0.6931471824645996f;
  const float p23 = 0.24022647738456726f + f * 0.055503323674201965f;
  const float p456 = (0.009618437848985195f + f * 0.0013398872688412666f) + f2 * 0.0001535334886284545f;
  const float p = (p01 + f2 * p23) + f4 * p456;
  return p * bits_to_float(static_cast<uint32_t>(n + 127) << 23);
}

// exp(x) = exp2_nonpos(x log2 e) is exactly 0 for x <= kExpLow (-88 log2 e < -126.5).
constexpr float kExpLow = -88.0f;

// v, hidden from the optimiser. A loop that clamps to a constant lets GCC split it on the
// clamped path (everything there folds), which leaves control flow that blocks vectorisation;
// clamping to opaque(constant) keeps the loop straight.
inline float opaque(float v) {
#if defined(__GNUC__)
  __asm__("" : "+m"(v));
#endif
  return v;
}

// Threads for a call: 1 when the work is too small to pay for waking a team.
inline int threads_for(int requested, int64_t rows, int64_t elements) {
  if (requested < 1 || rows < 2 || elements < (int64_t(1) << 15)) return 1;
  return rows < requested ? static_cast<int>(rows) : requested;
}

}  // namespace alter
