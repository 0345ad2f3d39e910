// Hinge forget loss, forward (docs/method.md §4).
//
// Per row n with label y: z_y, and the largest logit over i != y with its index y' (first index
// on ties); per_row = max(0, z_y - z_y' + margin) in fp32, other_index = y'. Rows whose label
// equals ignore_index give per_row 0 and other_index -1. One read of each row: chunk by chunk,
// a vectorised maximum, then (only when the chunk beats the row's best so far) a scan of that
// chunk, still in L1, for the first index holding it.
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "common.h"
#include "kernels.h"

namespace alter {
namespace {

// Raises best/best_index with the maximum of row[a, b) (first index on ties with earlier ones).
template <typename Src>
void scan_max(const typename Src::Raw* row, int64_t a, int64_t b, float* buf, float& best, int64_t& best_index) {
  for (int64_t start = a; start < b; start += kChunk) {
    const int64_t n = std::min(kChunk, b - start);
    const float* x = as_float<Src>(row + start, n, buf);
    const float cmax = chunk_max(x, n, kNegInf);
    if (cmax > best) {
      int64_t k = 0;
      while (k < n && !(x[k] == cmax)) ++k;
      best = cmax;
      best_index = start + k;
    }
  }
}

template <typename Src, typename Label>
void hinge_rows(uintptr_t logits, int64_t n_rows, int64_t vocab, int64_t row_stride, const Label* labels,
                float margin, int64_t ignore_index, float* per_row, int64_t* other_index, int threads) {
  const auto* base = reinterpret_cast<const typename Src::Raw*>(logits);
#pragma omp parallel num_threads(threads)
  {
    float buf[kChunk];
#pragma omp for schedule(static)
    for (int64_t r = 0; r < n_rows; ++r) {
      const int64_t y = static_cast<int64_t>(labels[r]);
      if (y == ignore_index) {
        per_row[r] = 0.0f;
        other_index[r] = -1;
        continue;
      }
      const auto* row = base + r * row_stride;
      float best = kNegInf;
      int64_t best_index = y == 0 ? 1 : 0;  // the first other index, kept if every other logit is -inf
      scan_max<Src>(row, 0, y, buf, best, best_index);
      scan_max<Src>(row, y + 1, vocab, buf, best, best_index);
      const float z_y = Src::get(row[y]);
      const float v = (z_y - best) + margin;
      per_row[r] = v < 0.0f ? 0.0f : v;  // a NaN stays NaN, as torch.clamp does
      other_index[r] = best_index;
    }
  }
}

template <typename Label>
void check_labels(const Label* labels, int64_t n_rows, int64_t vocab, int64_t ignore_index) {
  for (int64_t r = 0; r < n_rows; ++r) {
    const int64_t y = static_cast<int64_t>(labels[r]);
    if (y != ignore_index && (y < 0 || y >= vocab))
      throw std::invalid_argument("labels[" + std::to_string(r) + "] = " + std::to_string(y) + " is outside [0, " +
                                  std::to_string(vocab) + ") and is not ignore_index=" +
                                  std::to_string(ignore_index));
  }
}

template <typename Label>
void hinge_dispatch(uintptr_t logits, int dtype, int64_t n_rows, int64_t vocab, int64_t row_stride,
                    const Label* labels, float margin, int64_t ignore_index, float* per_row, int64_t* other_index,
                    int threads) {
  check_labels(labels, n_rows, vocab, ignore_index);
  switch (dtype) {
    case kFloat32:
      hinge_rows<F32>(logits, n_rows, vocab, row_stride, labels, margin, ignore_index, per_row, other_index, threads);
      break;
    case kBFloat16:
      hinge_rows<BF16>(logits, n_rows, vocab, row_stride, labels, margin, ignore_index, per_row, other_index, threads);
      break;
    case kFloat16:
      hinge_rows<F16>(logits, n_rows, vocab, row_stride, labels, margin, ignore_index, per_row, other_index, threads);
      break;
    default:
      throw std::invalid_argument("logits dtype code " + std::to_string(dtype) +
                                  " is not supported (float32, bfloat16 or float16)");
  }
}

}  // namespace

void hinge_forward(uintptr_t logits, int dtype, int64_t n_rows, int64_t vocab, int64_t row_stride,
                   uintptr_t labels, int labels_dtype, double margin, int64_t ignore_index, uintptr_t per_row,
                   uintptr_t other_index, int num_threads) {
  if (vocab < 2) throw std::invalid_argument("logits need at least 2 classes for a runner-up");
  if (n_rows <= 0) return;
  auto* out = reinterpret_cast<float*>(per_row);
  auto* other = reinterpret_cast<int64_t*>(other_index);
  const int threads = threads_for(num_threads, n_rows, n_rows * vocab);
  const float m = static_cast<float>(margin);
  if (labels_dtype == kInt64) {
    hinge_dispatch(logits, dtype, n_rows, vocab, row_stride, reinterpret_cast<const int64_t*>(labels), m,
                   ignore_index, out, other, threads);
  } else if (labels_dtype == kInt32) {
    hinge_dispatch(logits, dtype, n_rows, vocab, row_stride, reinterpret_cast<const int32_t*>(labels), m,
                   ignore_index, out, other, threads);
  } else {
    throw std::invalid_argument("labels dtype code " + std::to_string(labels_dtype) +
                                " is not supported (int64 or int32)");
  }
}

}  // namespace alter
