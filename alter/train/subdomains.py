"""Forget sub-domains and the centroid initialisation (docs/method.md §4 and §7).

- ``auto:K``: k-means (scipy's ``kmeans2`` with k-means++ seeding) on the base model's mean
  final hidden state of each forget example; the clusters become sub-domains forget_0..K-1.
- ``init="centroid"``: each router column starts as the normalised mean base-model input of
  that layer over the low-entropy tokens of its domain. The experts stay zero, so the wrapped
  model still equals the base model before training.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np
import torch

from alter.train.batches import TrainItem, collate_items


def _batches(items: Sequence[TrainItem], batch_size: int):
    order = sorted(range(len(items)), key=lambda i: len(items[i].encoded.input_ids))
    for i in range(0, len(order), batch_size):
        yield order[i:i + batch_size]


def cluster_forget_examples(model, items: Sequence[TrainItem], k: int, pad_token_id: int, seed: int,
                            batch_size: int = 16) -> List[int]:
    """k-means cluster id (0..k-1) of every item, from the mean of its final hidden states."""
    from scipy.cluster.vq import kmeans2

    if k < 1:
        raise ValueError(f"auto:K needs K >= 1, got {k}")
    if k > len(items):
        raise ValueError(f"auto:{k} asks for more sub-domains than there are forget examples ({len(items)})")
    feats = np.zeros((len(items), 0), dtype=np.float64)
    rows = {}
    for idx in _batches(items, batch_size):
        batch = collate_items([items[i] for i in idx], pad_token_id)
        ids = batch["input_ids"].to(model.device)
        mask = batch["attention_mask"].to(model.device)
        out = model.base_forward(ids, mask, output_hidden_states=True)
        hidden = out.hidden_states[-1].float()
        m = mask.unsqueeze(-1).float()
        mean = (hidden * m).sum(1) / m.sum(1)
        for j, i in enumerate(idx):
            rows[i] = mean[j].cpu().double().numpy()
    feats = np.stack([rows[i] for i in range(len(items))])
    if k == 1:
        return [0] * len(items)
    _, labels = kmeans2(feats, k, minit="++", seed=seed)
    return [int(x) for x in labels]


def centroid_init_routers(model, items: Sequence[TrainItem], theta: float, pad_token_id: int,
                          batch_size: int = 16) -> Dict[str, torch.Tensor]:
    """Set every router column to its domain's normalised low-entropy input centroid; returns the counts."""
    from alter.modeling.entropy import is_high, shift_entropy

    layers = model.adapter_layers()
    E = len(model.domains)
    sums = {name: torch.zeros(E, layer.in_features, dtype=torch.float64) for name, layer in layers.items()}
    counts = torch.zeros(E, dtype=torch.float64)
    current = {}

    def make_hook(name):
        def hook(module, args):
            x = args[0].detach().reshape(-1, module.in_features).double().cpu()
            low, dom = current["low"], current["dom"]
            sums[name].index_add_(0, dom[low], x[low])
        return hook

    handles = [layer.register_forward_pre_hook(make_hook(name)) for name, layer in layers.items()]
    try:
        for idx in _batches(items, batch_size):
            batch = collate_items([items[i] for i in idx], pad_token_id)
            mask = batch["attention_mask"]
            ent = shift_entropy(batch["position_entropy"], mask)
            low = (~is_high(ent, theta) & mask.bool()).reshape(-1)
            dom = batch["domain"].unsqueeze(1).expand_as(mask).reshape(-1)
            current.update(low=low, dom=dom)
            counts.index_add_(0, dom[low], torch.ones(int(low.sum()), dtype=torch.float64))
            with torch.no_grad(), model.disable_adapters():
                model.model(input_ids=batch["input_ids"].to(model.device), attention_mask=mask.to(model.device))
    finally:
        for h in handles:
            h.remove()
    with torch.no_grad():
        for name, layer in layers.items():
            for j in range(E):
                if counts[j] > 0:
                    c = sums[name][j] / counts[j]
                    layer.router[j].copy_((c / c.norm().clamp(min=1e-12)).to(layer.router[j].dtype))
    return {"low_entropy_tokens_per_domain": counts}
