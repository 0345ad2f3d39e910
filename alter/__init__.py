"""ALTER: asymmetric LoRA with token-entropy-guided unlearning (see ALTER_SPEC)."""
