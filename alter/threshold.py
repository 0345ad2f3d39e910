"""The entropy threshold theta between knowledge and structural tokens (docs/method.md §2).

``theta`` is a number, ``"quantile:P"`` (the P-quantile of the training tokens' entropies) or
``"auto"``: Otsu's threshold — the cut of the entropy histogram that maximises the
between-class variance w0 w1 (mu0 - mu1)^2 (Otsu 1979, "A threshold selection method from
gray-level histograms"), chosen for the bimodal entropy distribution the spec describes.
Computed once over the training tokens and saved with the adapter.
"""

from __future__ import annotations

from typing import Union

import numpy as np
import torch


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
