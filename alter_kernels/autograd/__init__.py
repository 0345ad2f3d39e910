"""torch.autograd.Function wrappers around the kernels' launchers (kept apart from the kernels)."""
