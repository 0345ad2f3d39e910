"""The TOFU benchmark's robustness and routing columns (alter/experiments/compare/worker.py) on a tiny model."""

import torch

import alter
from alter.experiments.compare.settings import CompareSettings
from alter.experiments.compare.worker import KEPT_EXTRAS, CompareData, _robustness_columns, _routing_columns
from alter.data.schema import QAExample
from alter.train import AlterTrainer
from tests.helpers import make_tiny_llama

FORGET = [QAExample(f"{w} does Ana Lopez {v}?", "In Lima.", domain="author_7", id=f"tofu-7-{i}")
          for i, (w, v) in enumerate([("Where", "live"), ("What", "paint")])]
RETAIN = [QAExample(f"{w} does Cy Ford {v}?", "In Oslo.", id=f"tofu-1-{i}")
          for i, (w, v) in enumerate([("Where", "live"), ("What", "sell")])]
WORLD = [QAExample("What is the capital of France?", "Paris", perturbed_answers=["Rome"])]


def _data():
    return CompareData(FORGET, RETAIN, FORGET, RETAIN, WORLD, WORLD, RETAIN[:1], [],
                       forget_reworded=FORGET[:1], retain_reworded=RETAIN[:1])


def test_routing_and_robustness_columns(tiny_tokenizer):
    torch.manual_seed(0)
    s = CompareSettings(dataset="tofu", eval_robustness=2, max_new_tokens=2, eval_batch_size=4,
                        system_prompt="Answer the question.")
    cfg = alter.AlterConfig(batch_size=2, phase2_epochs=1, phase2_min_steps=0, system_prompt=s.system_prompt)
    model = AlterTrainer(make_tiny_llama(len(tiny_tokenizer)), tiny_tokenizer, cfg, FORGET, RETAIN,
                         progress=False).train()
    model.eval()
    routing = _routing_columns(model, tiny_tokenizer, s, _data())
    assert set(routing) == {"routed_forget:forget", "routed_forget:forget_reworded", "routed_forget:retain",
                            "routed_forget:retain_reworded", "routed_forget:never_taught",
                            "routed_forget:world_facts", "routed_forget:real_authors",
                            "routed_own:forget", "routed_own:forget_reworded"}
    assert all(0.0 <= v <= 1.0 for v in routing.values())
    assert routing["routed_own:forget"] <= routing["routed_forget:forget"]
    robust = _robustness_columns(model, tiny_tokenizer, s, _data(), False)
    assert "robust_forget:trained" in robust and "robust_retain:follow_up" in robust
    assert set(robust["robustness_generations"]) == {"forget", "retain"}
    # every per-question output is kept in the method's result (the table's intervals read the scores)
    assert {k for k, v in robust.items() if isinstance(v, (list, dict))} == set(KEPT_EXTRAS)
    # a model without a question router has no routing columns; robustness off: no columns
    assert _routing_columns(make_tiny_llama(len(tiny_tokenizer)), tiny_tokenizer, s, _data()) == {}
    s.eval_robustness = 0
    assert _robustness_columns(model, tiny_tokenizer, s, _data(), False) == {}
