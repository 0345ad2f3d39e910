"""The routing probe (alter/eval/routing_probe.py): its prompt kinds and the shares it reports."""

import torch

import alter
from alter.data.schema import QAExample
from alter.eval.routing_probe import probe_kinds, route_shares, shares_markdown
from alter.train import AlterTrainer
from tests.helpers import make_tiny_llama

FORGET = [QAExample(f"Where does Ana Lo{c} live?", "In Lima.", domain="ana", id=f"t-7-{i}") for i, c in enumerate("ab")]
RETAIN = [QAExample(f"Where does Cy Fo{c} live?", "In Oslo.", id=f"t-1-{i}") for i, c in enumerate("ab")]
OTHER = [QAExample("What is the capital of France?", "Paris")]


def test_the_probe_builds_every_kind_and_reports_shares(tiny_tokenizer):
    torch.manual_seed(0)
    cfg = alter.AlterConfig(batch_size=2, phase2_epochs=1, phase2_min_steps=0)
    model = AlterTrainer(make_tiny_llama(len(tiny_tokenizer)), tiny_tokenizer, cfg, FORGET, RETAIN,
                         progress=False).prepare()
    prompts = probe_kinds(tiny_tokenizer, FORGET, RETAIN, OTHER, OTHER, OTHER, system_prompt="Answer.", per_kind=2)
    kinds = {k for k, _, _ in prompts}
    assert {"forget", "retain", "world_facts", "forget/lower", "retain/raw", "chat: forget -> retain",
            "chat: forget -> follow-up"} <= kinds
    assert all(t for k, t, _ in prompts if k.startswith("forget") or k == "chat: forget -> follow-up")
    shares = route_shares(model, prompts, pad_token_id=0, batch_size=4)
    assert set(shares) == kinds and all(0.0 <= c["to_forget"] <= 1.0 for c in shares.values())
    assert shares["forget"]["n"] == 2 and shares["retain"]["to_forget"] == 0.0
    table = shares_markdown(shares)
    assert "| forget | 2 |" in table and ">= 0.98" in table and "<= 0.01" in table
