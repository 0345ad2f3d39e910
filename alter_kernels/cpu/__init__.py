"""Python launchers of the C++ CPU kernels in ``csrc/`` (the extension ``alter_kernels._C``).

Each launcher checks its tensors (CPU, dtype, rank, unit stride along the last dimension),
allocates the outputs and passes raw data pointers, sizes and row strides to ``_C``, which
releases the GIL and parallelises over rows with OpenMP using
:func:`alter_kernels._backend.num_threads` threads. Public code calls them through
:mod:`alter_kernels` (backend "cpp"), which validates the arguments first.

- :func:`alter_kernels.cpu.entropy.tsallis_entropy_cpp` — docs/method.md §2
- :func:`alter_kernels.cpu.hinge.hinge_forward_cpp` — docs/method.md §4
- :func:`alter_kernels.cpu.routing.route_cpp` — docs/method.md §1 and §3
"""
