"""Shared fixtures: tiny random models and a tiny tokenizer built in-process (no hub, no files).

Without CUDA, Triton kernels run under its interpreter: TRITON_INTERPRET must be set before
triton is first imported, hence at the very top of this file.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

torch.set_num_threads(1)          # tiny test tensors gain nothing from more threads


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from tests.helpers import make_tiny_tokenizer      # transformers is imported only by tests that need it

    return make_tiny_tokenizer()


@pytest.fixture()
def tiny_llama(tiny_tokenizer):
    from tests.helpers import make_tiny_llama

    torch.manual_seed(0)
    return make_tiny_llama(vocab_size=len(tiny_tokenizer))


def devices():
    """Devices to run kernel tests on: always CPU, plus CUDA when present."""
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
