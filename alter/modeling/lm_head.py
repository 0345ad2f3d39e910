"""Whether a causal LM's logits are a plain linear head of its last hidden state, and its backbone.

When they are, ALTER computes what it needs from the logits chunk by chunk through the head (the base
pass's entropies and KL targets, the training losses: ``fused_lm_head``) and never holds ``[B, T, V]``.
"""

from __future__ import annotations

from typing import Optional

from torch import nn

from alter.modeling.layer import AlterLinear

# architectures whose forward returns exactly lm_head(final hidden state) (no scaling, capping or
# bias trick after the head); others (Granite's logits_scaling, Cohere's logit_scale, Gemma 2's
# soft-capping, unknown models) take the entropy from the logits they return
PLAIN_HEAD_MODEL_TYPES = frozenset({"llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe",
                                    "phi3", "olmo", "olmo2", "stablelm", "starcoder2", "gpt_neox"})


def backbone_of(model: nn.Module) -> Optional[nn.Module]:
    """The transformers backbone under the LM head (``model.model`` for Llama), or None."""
    backbone = getattr(model, getattr(model, "base_model_prefix", ""), None)
    return backbone if isinstance(backbone, nn.Module) and backbone is not model else None


def plain_lm_head_of(model: nn.Module) -> Optional[nn.Linear]:
    """The LM head when the model's logits are exactly ``head(final hidden state)`` (an allow-list of
    architectures, :data:`PLAIN_HEAD_MODEL_TYPES`), else None: then the entropy comes from the logits the
    model itself returns (full ``[B, T, V]``, always right)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    cfg = getattr(model, "config", None)
    if not isinstance(head, nn.Linear) or isinstance(head, AlterLinear):
        return None
    if getattr(cfg, "model_type", None) not in PLAIN_HEAD_MODEL_TYPES:
        return None
    if any(getattr(cfg, k, None) for k in ("final_logit_softcapping", "logit_scale", "logits_scaling")):
        return None
    return head
