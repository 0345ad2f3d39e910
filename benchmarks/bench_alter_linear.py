"""AlterLinear (docs/method.md §1) against a plain nn.Linear and a PEFT LoRA layer, in-process ratios.

Forward + backward of one adapted layer with a frozen base weight (gradients to the input and
to the adapter only), as in training: 4 experts (retain + 3 forget), rank 8, each token routed
to its domain's expert, A learning only from high-entropy tokens (half of them here). Also the
inference forward (entropy-dispatched routing) against nn.Linear.

Shapes: SmolLM2's MLP 576 -> 1536 at 2048 tokens everywhere (fp32 on CPU, bf16 on CUDA), and
Llama-8B's MLP 4096 -> 14336 at 2048 tokens on CUDA only. Targets (issue): at most 1.3x a plain
nn.Linear on CPU, 1.1x on GPU, and no more than a PEFT LoRA of the same rank — i.e. the ratio
"vs nn.Linear" printed below should be >= 1/1.3 (CPU) and "vs PEFT LoRA" >= 1.

Run: ``pytest benchmarks/bench_alter_linear.py --benchmark-only``. Nothing here asserts on time.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from alter import AlterLinear
from benchmarks.conftest import synchronized

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
DTYPE = torch.bfloat16 if CUDA else torch.float32
SHAPES = [(576, 1536, 2048)] + ([(4096, 14336, 2048)] if CUDA else [])
EXPERTS = 4
RANK = 8


def _id(shape):
    return "{}to{}x{}".format(*shape)


def _base(d_in, d_out):
    torch.manual_seed(0)
    layer = nn.Linear(d_in, d_out, bias=False).to(device=DEVICE, dtype=DTYPE)
    layer.weight.requires_grad_(False)
    return layer


def _alter(d_in, d_out):
    layer = AlterLinear(_base(d_in, d_out), r=RANK, alpha=16, num_forget_experts=EXPERTS - 1, theta=0.5)
    with torch.no_grad():
        for p in list(layer.lora_B) + list(layer.router):
            p.normal_(0, 0.02)
    return layer


def _peft(d_in, d_out):
    from peft import LoraConfig
    from peft.tuners.lora import Linear as LoraLinear

    config = LoraConfig(r=RANK, lora_alpha=16, lora_dropout=0.0)
    layer = LoraLinear(_base(d_in, d_out), adapter_name="default", config=config, r=RANK, lora_alpha=16)
    layer = layer.to(device=DEVICE, dtype=DTYPE)
    with torch.no_grad():
        layer.lora_B["default"].weight.normal_(0, 0.02)
    return layer


def _inputs(d_in, d_out, n):
    g = torch.Generator(device=DEVICE).manual_seed(1)
    x = torch.randn(n, d_in, generator=g, device=DEVICE).to(DTYPE).requires_grad_(True)
    grad = torch.randn(n, d_out, generator=g, device=DEVICE).to(DTYPE)
    entropy = torch.rand(n, generator=g, device=DEVICE)
    domain = torch.randint(0, EXPERTS, (n,), generator=g, device=DEVICE)
    return x, grad, entropy, domain


def _fwd_bwd(module, x, grad, **kw):
    def run():
        x.grad = None
        module(x, **kw).backward(grad)
    return run


@pytest.mark.parametrize("shape", SHAPES, ids=_id)
@pytest.mark.parametrize("reference", ["nn.Linear", "PEFT LoRA r=8"])
def test_alter_linear_training_step(benchmark, compare, shape, reference):
    d_in, d_out, n = shape
    x, grad, entropy, domain = _inputs(d_in, d_out, n)
    alter_layer = _alter(d_in, d_out)
    measured = synchronized(_fwd_bwd(alter_layer, x, grad, entropy=entropy, domain=domain), DEVICE)
    ref_module = _base(d_in, d_out) if reference == "nn.Linear" else _peft(d_in, d_out)
    ref = synchronized(_fwd_bwd(ref_module, x, grad), DEVICE)
    compare(benchmark, measured, ref, label=f"AlterLinear E={EXPERTS} fwd+bwd vs {reference}",
            rounds=20 if CUDA else 30)


@pytest.mark.parametrize("shape", SHAPES, ids=_id)
def test_alter_linear_inference_forward(benchmark, compare, shape):
    d_in, d_out, n = shape
    x, _, entropy, _ = _inputs(d_in, d_out, n)
    x = x.detach()
    alter_layer = _alter(d_in, d_out)
    base = _base(d_in, d_out)
    with torch.no_grad():
        measured = synchronized(lambda: alter_layer(x, entropy=entropy), DEVICE)
        ref = synchronized(lambda: base(x), DEVICE)
        compare(benchmark, measured, ref, label=f"AlterLinear E={EXPERTS} routed forward vs nn.Linear",
                rounds=20 if CUDA else 30)
