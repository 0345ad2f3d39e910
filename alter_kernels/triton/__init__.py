"""Triton kernels of ALTER (docs/method.md §1-§4) and their launchers.

One module per kernel family, each holding only the ``@triton.jit`` kernel(s) and the Python
launcher(s) that size the grid and allocate the outputs:

- :mod:`alter_kernels.triton.entropy` — one-pass Tsallis / Shannon entropy of softmax(logits),
  with log-sum-exp, arg-max and runner-up logit (section 2).
- :mod:`alter_kernels.triton.asym_lora` — the gated shared-A / multi-B matmul: ``shrink_gate``,
  ``expand_add``, ``expand_backward`` (sections 1 and 3), same contracts as
  :mod:`alter_kernels.composite.asym_lora`.
- :mod:`alter_kernels.triton.routing` — entropy-dispatched expert gates (sections 1 and 4).
- :mod:`alter_kernels.triton.hinge` — forward pass of the bounded hinge forget loss (section 3).

Input validation of user arguments happens in :mod:`alter_kernels` (the public API); the
launchers check only what a kernel itself relies on (ranks, unit inner stride, dtypes). On CPU
tensors the kernels run only under ``TRITON_INTERPRET=1`` (Triton's interpreter), which the
tests use. Autograd lives in :mod:`alter_kernels.autograd`, not here.

Importing this package does not import Triton; importing one of its modules does.
"""
