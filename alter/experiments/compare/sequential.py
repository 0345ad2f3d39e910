"""Sequential unlearning requests on MUSE-News (MUSE's "sustainability"): ``alter-bench --benchmark muse-news
--requests N``.

The fold's forget windows are split into N disjoint requests of whole articles
(:func:`alter.data.muse_news.requests`) and unlearned one after another from the taught model:

- ALTER: request 1 trains the adapter (expert ``request_1``); request k adds expert ``request_k`` to it
  and trains only that one (:meth:`alter.train.AlterTrainer.train_new_domain`); the shared A, the retain
  expert, the earlier experts, their router banks and the router threshold stay bit-identical;
- a baseline: request k fine-tunes the model request k - 1 left (the method's own recipe each time);
- ``finetune`` (the taught model) and ``retain`` (never taught) are scored once, as stage 0.

After each request every request's VerbMem and KnowMem are scored (the earlier ones must stay forgotten,
the later ones still known) and the retain side's.
"""

from __future__ import annotations

import time
from typing import Dict, List

from alter.data.schema import QAExample


def _request_examples(part, k: int) -> List[QAExample]:
    return [QAExample(question="", answer=f.text, domain=f"request_{k}", id=f"request_{k}#{i}")
            for i, f in enumerate(part)]


def _scores(model, tok, s, data, parts, progress) -> Dict:
    from alter.experiments.compare.muse import forget_side, retain_side

    out: Dict = {}
    for j, part in enumerate(parts, 1):
        vm, km = forget_side(model, tok, s, part, data.muse.icl_forget, progress)
        out[f"verbmem_request_{j}"], out[f"knowmem_request_{j}"] = vm["rougeL_f1"], km["mean"]
    vm, km = retain_side(model, tok, s, data.muse, progress)
    out["verbmem_retain"], out["knowmem_retain"] = vm["rougeL_f1"], km["mean"]
    return out


def run_sequential(spec, s, data, progress: bool) -> Dict:
    """Every stage's scores for method ``spec`` (module docstring): ``{"row": last stage, "stages": [...]}``."""
    import torch

    from alter.baselines.registry import method_info
    from alter.data.muse_news import requests
    from alter.eval.efficiency import measure
    from alter.experiments.compare.worker import _unlearn, starting_model, stop_reference

    parts = requests(data.muse_items, s.muse_requests)
    info = method_info(spec.method)
    seed = s.seed if spec.seed is None else spec.seed
    if spec.method in ("retain", "finetune"):
        model, tok, _ = _unlearn(spec, s, data, progress)
        model.eval()
        stage = {"request": 0, **_scores(model, tok, s, data, parts, progress)}
        return {"row": {"method": spec.name, **stage}, "stages": [stage]}
    model, tok, _ = starting_model(s, data, progress)
    stages = []
    for k, part in enumerate(parts, 1):
        forget = _request_examples(part, k)
        t0 = time.time()
        with measure() as rec:
            if info.kind == "alter":
                import alter
                from alter.train import AlterTrainer

                if k == 1:
                    values = {"batch_size": s.batch_size, "system_prompt": s.system_prompt, **s.alter,
                              **info.alter_config, "seed": seed}
                    if spec.lr is not None:
                        values["lr_phase2"] = spec.lr
                    trainer = AlterTrainer(model, tok, alter.AlterConfig.from_dict(values), forget, data.retain,
                                           progress=progress, stop_reference=stop_reference(data))
                    model = trainer.train()
                else:
                    trainer = AlterTrainer(model, tok, None, forget, data.retain, progress=progress,
                                           stop_reference=stop_reference(data))
                    model = trainer.train_new_domain(f"request_{k}")
                steps = trainer.report.phases.get("phase2", {}).get("steps")
            else:
                from alter.baselines import run_unlearning

                result = run_unlearning(spec.method, model, tok, forget, data.retain,
                                        epochs=s.unlearn_epochs if spec.epochs is None else spec.epochs,
                                        batch_size=s.batch_size, lr=spec.lr or s.method_lr.get(spec.method),
                                        seed=seed, system_prompt=s.system_prompt, progress=progress)
                model, steps = result.model, result.report.steps
        eff = rec.to_dict()
        model.eval()
        torch.manual_seed(seed)
        stage = {"request": k, "train_seconds": round(time.time() - t0, 1), "unlearn_steps": steps,
                 "peak_memory_bytes": eff.get("peak_rss_bytes") or eff.get("cuda_peak_allocated_bytes"),
                 **_scores(model, tok, s, data, parts, progress)}
        stages.append(stage)
    return {"row": {"method": spec.name, **stages[-1]}, "stages": stages}


def sequential_markdown(results: Dict[str, Dict], n: int) -> str:
    """One line per (method, stage): each request's VerbMem / KnowMem and the retain side."""
    head = ("| method | after request | " + " | ".join(f"request {j}: VerbMem / KnowMem" for j in range(1, n + 1))
            + " | retain VerbMem / KnowMem | steps | wall time (s) |")
    lines = [head, "|---" * (n + 5) + "|"]

    def pair(a, b):
        return " / ".join("-" if v is None else f"{v:.3f}" for v in (a, b))

    for method, result in results.items():
        for st in result.get("stages", []):
            cells = [pair(st.get(f"verbmem_request_{j}"), st.get(f"knowmem_request_{j}")) for j in range(1, n + 1)]
            label = {0: "taught" if method == "finetune" else "never taught"}.get(st["request"], str(st["request"]))
            lines.append(f"| {method} | {label} | " + " | ".join(cells) + " | "
                         + pair(st.get("verbmem_retain"), st.get("knowmem_retain")) + " | "
                         + ("-" if st.get("unlearn_steps") is None else str(st["unlearn_steps"])) + " | "
                         + ("-" if st.get("train_seconds") is None else f"{st['train_seconds']:.0f}") + " |")
    return "\n".join(lines)
