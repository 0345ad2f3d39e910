// Entry points of ALTER's CPU kernels (bound to Python in bindings.cpp).
//
// Tensors arrive as raw addresses with their sizes, row strides (in elements) and a DType code
// from common.h; outputs are preallocated by the Python launchers in alter_kernels/cpu/.
// Every function may be called without the GIL and parallelises over rows with OpenMP.
#pragma once

#include <cstdint>

namespace alter {

// Tsallis entropy of softmax over each row, one pass (docs/method.md §2). entropy: fp32 [N].
// lse (fp32), argmax (int64), runner_up (fp32) are written when non-zero (all or none).
void tsallis_entropy(uintptr_t logits, int dtype, int64_t n_rows, int64_t vocab, int64_t row_stride, double q,
                     uintptr_t entropy, uintptr_t lse, uintptr_t argmax, uintptr_t runner_up, int num_threads);

// Hinge forward (docs/method.md §4): per_row fp32 [N], other_index int64 [N].
// Throws std::invalid_argument (before any work) when a label is outside [0, vocab).
void hinge_forward(uintptr_t logits, int dtype, int64_t n_rows, int64_t vocab, int64_t row_stride,
                   uintptr_t labels, int labels_dtype, double margin, int64_t ignore_index, uintptr_t per_row,
                   uintptr_t other_index, int num_threads);

// Entropy-dispatched routing (docs/method.md §1 and §3): gates fp32 [N, E], contiguous.
// mode 0 = infer, 1 = train. theta is compared against entropy as a double.
void route(uintptr_t entropy, int entropy_dtype, uintptr_t router_logits, int router_dtype, int64_t n_rows,
           int64_t n_experts, double theta, double tau_high, double tau_low, int64_t top_k, int64_t retain_index,
           int mode, uintptr_t gates, int num_threads);

}  // namespace alter
