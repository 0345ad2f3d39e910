"""One module per op: input checks and backend dispatch (``alter_kernels`` re-exports the functions).

- :mod:`alter_kernels.ops.entropy`: ``tsallis_entropy``, ``linear_tsallis_entropy``
- :mod:`alter_kernels.ops.asym_lora`: ``asym_lora``, ``fused_alter_linear``
- :mod:`alter_kernels.ops.routing`: ``route``
- :mod:`alter_kernels.ops.hinge`: ``hinge_forget_loss``

The kernels themselves live in :mod:`alter_kernels.triton` (GPU), :mod:`alter_kernels.cpu` (the
C++ extension's launchers), :mod:`alter_kernels.reference` (PyTorch, the ground truth) and
:mod:`alter_kernels.composite`; their autograd wrappers in :mod:`alter_kernels.autograd`.
"""
