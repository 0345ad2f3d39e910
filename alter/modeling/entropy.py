"""Token entropy, in one place (docs/method.md §2): which distribution a token's entropy comes
from, the threshold theta between knowledge and structural tokens, and the rule that splits them.

Two quantities, two names, everywhere in the package:
- *position entropy* ``[B, T]``: S_q of the distribution the model outputs *at* position t (the
  one predicting token t+1); what the kernels compute from logits (``position_entropy``);
- *token entropy* ``[B, T]``: the entropy that routes token t, the position entropy of t-1
  (``shift_entropy``); what every adapted layer reads (``entropy=`` in forward).

- ``shift_entropy``: ``H[:, t] = S(logits[:, t-1])``, the entropy of the distribution that
  predicted token t (first tokens: +inf, high);
- ``is_high(entropy, theta)``: the one rule, ``entropy >= theta`` (+inf is high);
- ``check_finite``: NaN in the entropies (a NaN logit in the base model) is an error naming the
  position, never a silent "low entropy" (the kernels give NaN out for NaN in);
- ``theta``: a number, ``"quantile:P"`` (the P-quantile of the training tokens' entropies) or
  ``"auto"``: Otsu's threshold, the cut of the entropy histogram that maximises the
  between-class variance w0 w1 (mu0 - mu1)^2 (Otsu 1979). Computed once over the training
  tokens and saved with the adapter.
"""

from __future__ import annotations

from typing import Optional, Union

import numpy as np
import torch


def is_high(entropy: torch.Tensor, theta: float) -> torch.Tensor:
    """Bool mask of high-entropy (structural) tokens: ``entropy >= theta``; +inf is high."""
    return entropy >= theta


def check_finite(entropy: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                 what: str = "token entropy") -> torch.Tensor:
    """``entropy`` unchanged, or a ValueError naming the first NaN position (batch row, token)
    among the real tokens (``attention_mask``; padding may legitimately be NaN).

    One device sync per call: call it once per base pass, not per layer."""
    nan = torch.isnan(entropy)
    if attention_mask is not None:
        nan = nan & attention_mask.to(nan.device).bool()
    if bool(nan.any()):
        where = [int(v) for v in nan.nonzero()[0].tolist()]
        raise ValueError(f"{what} is NaN at position {tuple(where)} (of shape {tuple(entropy.shape)}): the base "
                         "model produced NaN logits there (check its weights and dtype); NaN cannot be routed")
    return entropy


def shift_entropy(per_position: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Entropy of the distribution that predicted each token: ``H[:, t] = S(logits[:, t-1])``.

    The first position, and the first real token after left padding, have no predictive
    distribution and count as high entropy (+inf).
    """
    inf = torch.full_like(per_position[:, :1], float("inf"))
    shifted = torch.cat([inf, per_position[:, :-1]], dim=1)
    if attention_mask is not None:
        prev_pad = torch.cat([torch.ones_like(attention_mask[:, :1], dtype=torch.bool),
                              attention_mask[:, :-1] == 0], dim=1)
        shifted = shifted.masked_fill(prev_pad.to(shifted.device), float("inf"))
    return shifted


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count only real tokens (what generation uses with left padding)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def otsu_threshold(values, bins: int = 256) -> float:
    """Otsu's threshold of a 1-D sample (finite values only); the midpoint of the best cut's bin edge."""
    v = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise ValueError("cannot compute an Otsu threshold: no finite entropy values")
    lo, hi = float(v.min()), float(v.max())
    if hi - lo < 1e-12:
        return hi
    counts, edges = np.histogram(v, bins=bins, range=(lo, hi))
    p = counts / counts.sum()
    centers = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(p)                       # weight of the class at or below each cut
    m0 = np.cumsum(p * centers)             # its first moment
    mt = m0[-1]
    w1 = 1.0 - w0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mt * w0 - m0) ** 2 / (w0 * w1)
    between[~np.isfinite(between)] = -1.0
    k = int(np.argmax(between[:-1])) if bins > 1 else 0
    return float(edges[k + 1])


def resolve_theta(spec: Union[str, float, int], entropies) -> float:
    """Turn the config's ``theta`` into a number, using ``entropies`` for 'auto' and 'quantile:P'."""
    if isinstance(spec, (int, float)):
        return float(spec)
    text = str(spec).strip()
    if text == "auto":
        return otsu_threshold(entropies)
    if text.startswith("quantile:"):
        p = float(text.split(":", 1)[1])
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"theta quantile must be in [0, 1], got {p}")
        v = torch.as_tensor(entropies, dtype=torch.float64).flatten()
        v = v[torch.isfinite(v)]
        if v.numel() == 0:
            raise ValueError("cannot compute a theta quantile: no finite entropy values")
        return float(torch.quantile(v, p))
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"theta must be 'auto', 'quantile:P' or a number, got {spec!r}") from None
