"""Where one ALTER run of the TOFU benchmark spends its time and memory (docs/method.md §4, "Cost").

    python -m alter.experiments.run_profile --data ../shared/data/tofu --seed 2
    python -m alter.experiments.run_profile --data ../shared/data/tofu --seed 2 --set gradient_checkpointing=false

trains ALTER once on the benchmark's split (the taught model cached by ``alter-bench --benchmark tofu``;
taught here on first use), with the RSS sampled every 20 ms, and prints per part of the run (preparation,
the stop's calibration, phase II's step forwards, the rest of the steps, the stop checks) its seconds and the
peak RSS inside it, then the run's total, peak and steps, as JSON. ``--set`` overrides ALTER settings.
No evaluation: ``alter-bench`` scores the run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import threading
import time
from typing import Dict, List, Optional, Tuple

import torch

from alter.eval.efficiency import current_rss_bytes

PARTS = {"prepare": ("alter.train.trainer", "AlterTrainer", "prepare"),
         "stop_calibration": ("alter.train.stopping.early_stop", "EarlyStop", "start"),
         "stop_update": ("alter.train.stopping.early_stop", "EarlyStop", "update"),
         "step_forward": ("alter.train.trainer", "AlterTrainer", "_step")}
CHECK_SECONDS = 1.0          # a stop update longer than this ran a check (an update without one is milliseconds)


class _Sampler(threading.Thread):
    def __init__(self, interval_s: float = 0.02):
        super().__init__(daemon=True)
        self.interval_s, self.samples, self._halt = interval_s, [], threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.samples.append((time.perf_counter(), current_rss_bytes() or 0))
            time.sleep(self.interval_s)

    def stop(self) -> List[Tuple[float, int]]:
        self._halt.set()
        self.join()
        return self.samples


@contextlib.contextmanager
def _timed_parts(spans: List[Tuple[str, float, float]]):
    """Wrap each method of :data:`PARTS` to record ``(part, start, end)``; restored on exit."""
    import importlib

    saved = []
    for part, (module, cls, name) in PARTS.items():
        owner = getattr(importlib.import_module(module), cls)
        original = getattr(owner, name)

        def timed(*args, _original=original, _part=part, **kwargs):
            start = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                spans.append((_part, start, time.perf_counter()))

        setattr(owner, name, timed)
        saved.append((owner, name, original))
    try:
        yield
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


def summarise(spans: List[Tuple[str, float, float]], samples: List[Tuple[float, int]], start: float,
              end: float) -> Dict:
    """Seconds and peak RSS (GiB) per part; stop updates that ran a check counted apart as ``stop_checks``."""
    def part(intervals):
        peak = max((r for t, r in samples if any(a <= t <= b for a, b in intervals)), default=0)
        return {"n": len(intervals), "seconds": round(sum(b - a for a, b in intervals), 1),
                "peak_gib": round(peak / 2 ** 30, 3)}

    out = {}
    for name in ("prepare", "stop_calibration", "step_forward"):
        out[name] = part([(a, b) for p, a, b in spans if p == name])
    out["stop_checks"] = part([(a, b) for p, a, b in spans if p == "stop_update" and b - a > CHECK_SECONDS])
    known = sum(v["seconds"] for v in out.values())
    out["rest_of_steps_s"] = round(end - start - known, 1)    # backward, optimizer, batching, KL targets
    out["total_s"] = round(end - start, 1)
    out["peak_gib"] = round(max((r for t, r in samples if start <= t <= end), default=0) / 2 ** 30, 3)
    return out


def _setting(raw: str):
    """``true``/``false``, a number or a JSON value, else the string itself."""
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m alter.experiments.run_profile", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="the TOFU directory of alter-bench --benchmark tofu")
    p.add_argument("--split", choices=("tune", "report"), default="report")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="an ALTER setting (AlterConfig field), e.g. gradient_checkpointing=false; repeatable")
    p.add_argument("--json", default=None, help="also write the result here")
    args = p.parse_args(argv)

    import alter
    from alter.experiments.compare.settings import TOFU, CompareSettings
    from alter.experiments.compare.worker import build_data, starting_model, stop_reference
    from alter.train import AlterTrainer

    torch.set_num_threads(args.threads)
    s = CompareSettings(**{**TOFU, "data_dir": args.data, "tofu_split": args.split})
    data = build_data(s)
    model, tok, _ = starting_model(s, data, progress=False)
    values = {"phase2_epochs": s.unlearn_epochs, "batch_size": s.batch_size, "system_prompt": s.system_prompt,
              **s.alter, "seed": args.seed}
    for item in args.set:
        field, sep, raw = item.partition("=")
        if not sep:
            p.error(f"--set takes FIELD=VALUE, got {item!r}")
        values[field] = _setting(raw)
    config = alter.AlterConfig.from_dict(values)
    spans: List[Tuple[str, float, float]] = []
    sampler = _Sampler()
    sampler.start()
    with _timed_parts(spans):
        start = time.perf_counter()
        trainer = AlterTrainer(model, tok, config, data.forget, data.retain, progress=False,
                               stop_reference=stop_reference(data))
        trainer.train()
        end = time.perf_counter()
    result = summarise(spans, sampler.stop(), start, end)
    result.update(steps=trainer.report.phases.get("phase2", {}).get("steps"), split=args.split, seed=args.seed,
                  settings={k: values[k] for k in values if k in {f.partition("=")[0] for f in args.set}})
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        from alter.io import atomic_write_json
        atomic_write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
