"""Kernels composed from PyTorch operators: the path where no Triton or C++ kernel applies."""
