// pybind11 module alter_kernels._C: ALTER's CPU kernels on raw tensor addresses.
//
// No torch headers: the Python launchers (alter_kernels/cpu/) pass tensor.data_ptr(), sizes,
// row strides in elements and a dtype code (DTYPE_*), and allocate every output. The GIL is
// released while a kernel runs; bad arguments raise ValueError before any work is done.
#include <pybind11/pybind11.h>

#include "common.h"
#include "kernels.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace py = pybind11;

namespace {

const char* simd_level() {
#if defined(__AVX512F__)
  return "avx512f";
#elif defined(__AVX2__) && defined(__FMA__)
  return "avx2+fma";
#elif defined(__AVX__)
  return "avx";
#elif defined(__SSE2__)
  return "sse2";
#elif defined(__ARM_NEON)
  return "neon";
#else
  return "scalar";
#endif
}

int omp_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "ALTER's C++ CPU kernels (Tsallis entropy, hinge forward, routing); see alter_kernels.cpu";
  m.attr("DTYPE_FLOAT32") = static_cast<int>(alter::kFloat32);
  m.attr("DTYPE_BFLOAT16") = static_cast<int>(alter::kBFloat16);
  m.attr("DTYPE_FLOAT16") = static_cast<int>(alter::kFloat16);
  m.attr("DTYPE_FLOAT64") = static_cast<int>(alter::kFloat64);
  m.attr("DTYPE_INT32") = static_cast<int>(alter::kInt32);
  m.attr("DTYPE_INT64") = static_cast<int>(alter::kInt64);
  m.attr("CHUNK") = alter::kChunk;
  m.attr("LANES") = alter::kLanes;

  m.def("simd_level", &simd_level, "The widest SIMD extension this build was compiled for.");
  m.def("omp_max_threads", &omp_threads, "OpenMP's default team size (1 when built without OpenMP).");

  m.def("tsallis_entropy", &alter::tsallis_entropy, py::call_guard<py::gil_scoped_release>(),
        "One-pass Tsallis entropy per row (docs/method.md §2); lse/argmax/runner_up addresses 0 to skip.",
        py::arg("logits"), py::arg("dtype"), py::arg("n_rows"), py::arg("vocab"), py::arg("row_stride"),
        py::arg("q"), py::arg("entropy"), py::arg("lse"), py::arg("argmax"), py::arg("runner_up"),
        py::arg("num_threads"));
  m.def("hinge_forward", &alter::hinge_forward, py::call_guard<py::gil_scoped_release>(),
        "Per-row hinge max(0, z_y - z_y' + margin) and the index y' (docs/method.md §4).", py::arg("logits"),
        py::arg("dtype"), py::arg("n_rows"), py::arg("vocab"), py::arg("row_stride"), py::arg("labels"),
        py::arg("labels_dtype"), py::arg("margin"), py::arg("ignore_index"), py::arg("per_row"),
        py::arg("other_index"), py::arg("num_threads"));
  m.def("route", &alter::route, py::call_guard<py::gil_scoped_release>(),
        "Entropy-dispatched gate weights [N, E] (docs/method.md §1 and §3); mode 0 infer, 1 train.",
        py::arg("entropy"), py::arg("entropy_dtype"), py::arg("router_logits"), py::arg("router_dtype"),
        py::arg("n_rows"), py::arg("n_experts"), py::arg("theta"), py::arg("tau_high"), py::arg("tau_low"),
        py::arg("top_k"), py::arg("retain_index"), py::arg("mode"), py::arg("gates"), py::arg("num_threads"));
}
