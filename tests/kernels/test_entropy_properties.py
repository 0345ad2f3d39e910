"""Properties of the Tsallis entropy (docs/method.md §2) that every backend must keep.

For p = softmax(z) over V classes: 0 <= S_q(p) <= (1 - V^(1-q)) / (q - 1) (log V for q = 1),
with 0 at a one-hot distribution and the maximum at the uniform one; S_q is continuous in q at
q = 1 (the Shannon limit); and no input — logits of +-1e4, -inf entries, rows entirely -inf —
gives NaN; and a NaN logit gives NaN out (entropy, lse, runner-up), never a silent "low
entropy". Checked with hypothesis on every backend present at collection time: "torch" always,
"cpp" when the extension is built, "triton" when its entropy module exists (under the Triton
interpreter on CPU, which is slow: few, small examples).
"""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import alter_kernels as ak
from alter_kernels.reference import tsallis_entropy_reference


def _backends():
    found = ["torch"]
    if ak.cpp_available():
        found.append("cpp")
    if importlib.util.find_spec("alter_kernels.triton.entropy") is not None:
        found.append("triton")
    return found


BACKENDS = _backends()
QS = [0.5, 1.0, 1.5, 2.0, 3.0]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
# (largest V, examples) per backend: the Triton interpreter costs ~1000x a compiled kernel
LIMITS = {"torch": (300, 25), "cpp": (300, 25), "triton": (48, 4)}
SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
TOL = 2e-5  # relative to the bound (fp32 arithmetic)


def max_entropy(V: int, q: float) -> float:
    return math.log(V) if q == 1.0 else (1.0 - V ** (1.0 - q)) / (q - 1.0)


def entropy_of(backend: str, logits: torch.Tensor, q: float) -> torch.Tensor:
    device = "cuda" if backend == "triton" and torch.cuda.is_available() else "cpu"
    with ak.use_backend(backend):
        return ak.tsallis_entropy(logits.to(device), q).cpu()


@st.composite
def logit_rows(draw, max_v: int):
    """[N, V] logits of a random dtype and scale, some entries -inf (every row keeps a finite one)."""
    n = draw(st.integers(1, 3))
    v = draw(st.integers(1, max_v))
    scale = draw(st.sampled_from([0.01, 1.0, 4.0, 30.0]))
    neg_inf = draw(st.sampled_from([0.0, 0.0, 0.5, 0.95]))
    dtype = draw(st.sampled_from(DTYPES))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    z = torch.randn(n, v, generator=g) * scale
    mask = torch.rand(n, v, generator=g) < neg_inf
    mask[torch.arange(n), torch.randint(0, v, (n,), generator=g)] = False
    return z.masked_fill(mask, float("-inf")).to(dtype)


def _property_tests(backend: str):
    max_v, examples = LIMITS[backend]
    run = settings(max_examples=examples, **SETTINGS)

    @run
    @given(logits=logit_rows(max_v), q=st.sampled_from(QS))
    def bounded(logits, q):
        got = entropy_of(backend, logits, q)
        finite = (logits > float("-inf")).sum(-1)
        upper = torch.tensor([max_entropy(int(k), q) for k in finite])
        tol = TOL * (1.0 + upper)
        assert not torch.isnan(got).any()
        assert (got >= -tol).all(), (got, upper)
        assert (got <= upper + tol).all(), (got, upper)

    @run
    @given(v=st.integers(1, max_v), at=st.integers(0, 10**6), value=st.floats(-1e4, 1e4), q=st.sampled_from(QS),
           dtype=st.sampled_from(DTYPES))
    def one_hot_is_zero(v, at, value, q, dtype):
        logits = torch.full((2, v), float("-inf"))
        logits[:, at % v] = value
        got = entropy_of(backend, logits.to(dtype), q)
        assert (got.abs() <= 1e-6).all(), got

    @run
    @given(v=st.integers(1, max_v), value=st.floats(-1e4, 1e4), q=st.sampled_from(QS), dtype=st.sampled_from(DTYPES))
    def uniform_is_maximal(v, value, q, dtype):
        got = entropy_of(backend, torch.full((2, v), value).to(dtype), q)
        expected = max_entropy(v, q)
        assert torch.allclose(got.double(), torch.full((2,), expected, dtype=torch.float64), rtol=TOL, atol=TOL)

    @run
    @given(logits=logit_rows(max_v))
    def continuous_at_shannon(logits):
        eps = 1e-3
        ref_gap = (tsallis_entropy_reference(logits.double(), 1.0 + eps)
                   - tsallis_entropy_reference(logits.double(), 1.0)).abs()
        V = logits.shape[-1]
        # S_{1+eps} - H = -eps/2 sum p (log p)^2 + O(eps^2), and sum p (log p)^2 <= (log V + 1)^2
        assert (ref_gap <= eps * (math.log(V) + 1) ** 2 / 2).all(), ref_gap
        near = entropy_of(backend, logits, 1.0 + eps)
        shannon = entropy_of(backend, logits, 1.0)
        # fp32 sums lose ~1e-7 relative, which S_q's 1/(q - 1) amplifies by 1000 near q = 1
        assert ((near - shannon).abs().double() <= ref_gap + 2e-3).all()

    @run
    @given(v=st.integers(2, max_v), seed=st.integers(0, 2**31 - 1), q=st.sampled_from(QS),
           dtype=st.sampled_from([torch.float32, torch.bfloat16]))
    def extreme_logits_give_no_nan(v, seed, q, dtype):
        g = torch.Generator().manual_seed(seed)
        z = torch.where(torch.rand(4, v, generator=g) < 0.5, -1e4, 1e4)
        z[1] = float("-inf")                                   # no distribution: entropy 0
        z[2, torch.rand(v, generator=g) < 0.5] = float("-inf")
        z[3] = torch.randn(v, generator=g) * 1e4
        got = entropy_of(backend, z.to(dtype), q)
        assert not torch.isnan(got).any() and torch.isfinite(got).all(), got
        assert got[1] == 0
        ref = tsallis_entropy_reference(z.to(dtype).double(), q)
        assert torch.allclose(got.double(), ref, rtol=1e-4, atol=1e-4), (got, ref)

    return {"bounded": bounded, "one_hot_is_zero": one_hot_is_zero, "uniform_is_maximal": uniform_is_maximal,
            "continuous_at_shannon": continuous_at_shannon, "extreme_logits_give_no_nan": extreme_logits_give_no_nan}


PROPERTIES = sorted(_property_tests("torch"))
CASES = [(backend, name) for backend in BACKENDS for name in PROPERTIES]


@pytest.mark.parametrize("backend, prop", CASES, ids=[f"{b}-{p}" for b, p in CASES])
def test_entropy_property(backend, prop):
    _property_tests(backend)[prop]()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_nan_in_gives_nan_out(backend, dtype):
    """One policy for every backend: a row holding a NaN has NaN entropy, lse and runner-up; the
    other rows are untouched (wide rows reach the C++ kernel's later chunks)."""
    widths = (37,) if backend == "triton" else (37, 5000)
    for V in widths:
        z = torch.randn(4, V) * 3
        z[1, V - 2] = float("nan")                   # one NaN among finite logits, late in the row
        z[2, :] = float("-inf")
        z[2, 3] = float("nan")                       # a NaN among -inf entries
        z[3, :] = float("nan")
        z = z.to(dtype)
        device = "cuda" if backend == "triton" and torch.cuda.is_available() else "cpu"
        with ak.use_backend(backend):
            stats = ak.tsallis_entropy(z.to(device), 1.5, return_stats=True)
            plain = ak.tsallis_entropy(z.to(device), 1.5).cpu()
        for name in ("entropy", "lse", "runner_up"):
            got = getattr(stats, name).cpu()
            assert torch.isnan(got[1:]).all(), (backend, V, name, got)
            assert not torch.isnan(got[0]), (backend, V, name, got)
        assert torch.isnan(plain[1:]).all() and not torch.isnan(plain[0])
        ref = tsallis_entropy_reference(z[:1].double(), 1.5)
        assert torch.allclose(plain[:1].double(), ref, rtol=1e-4, atol=1e-4)
