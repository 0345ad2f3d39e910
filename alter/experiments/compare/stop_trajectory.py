"""Phase II's level-stop readings check by check, to choose the stop's scales from data (docs/method.md §4).

    python -m alter.experiments.compare.stop_trajectory --run RUN --seed 2 --cap 90 --json traj_tune_2.json
    python -m alter.experiments.compare.stop_trajectory --simulate traj_tune_*.json --scales 1,0.75,0.6 \\
        --stall-scales -1,1,1.25

The first form trains ALTER on the data of a TOFU benchmark folder ``RUN`` (``alter-bench --benchmark tofu
--output RUN``: its ``settings.json``, its split, the taught model from the cache, the never-taught model's
scores from ``RUN/methods/retain.json``) with the level stop only *observing*: at every check (steps ``phase2_min_steps``,
then every ``stop_check_every``) it records the stop sample's whole reading, the mismatched answers' level at
scale 1, and the benchmark's forget answers (``forget_eval``) scored as generation would: their mean
probability and the KS test of their per-item probabilities against the never-taught model's (TOFU's forget
quality on probabilities, read from that model's benchmark JSON). Training is what a run at the defaults does
up to the cap: the observer neither stops it nor touches the batches.

The second form replays the recorded readings under other scales: where the stop (the level and the stall rule,
:mod:`alter.train.stopping.level`) would have ended phase II, and the benchmark's forget statistics there.
"""

from __future__ import annotations

import argparse
import json
import logging
from typing import Dict, List, Optional, Sequence
from unittest import mock

from alter.train.stopping.level import ForgetLevelStop, mean_probability

logger = logging.getLogger(__name__)


def stop_step(rows: Sequence[Dict], scale: float, stall_scale: Optional[float]) -> Optional[Dict]:
    """The recorded check at which the level stop at ``scale`` (and the stall rule at ``stall_scale``; None or
    not above ``scale``: off) ends phase II, or None when no recorded check does. ``rows``: the checks in order,
    each with ``reading`` and ``level1`` (the mismatched answers' probability, scale 1)."""
    stall = stall_scale if stall_scale is not None and stall_scale > scale else None
    previous = None
    for row in rows:
        reading, base = float(row["reading"]), float(row["level1"])
        if reading <= scale * base:
            return row
        if stall is not None and previous is not None and previous <= reading <= stall * base:
            return row
        previous = reading
    return None


def _observer(record, cap: int):
    """A :class:`ForgetLevelStop` whose checks record (``record(model, reading, level1)``) and never stop before
    check ``cap`` (a step)."""

    class Observing(ForgetLevelStop):
        def forgotten(self, model) -> bool:
            level1 = self.calibrate(model)            # the run's stop_level_scale is 1 (record_trajectory)
            self.last = mean_probability(model, self.true, self.pad, self.batch_size)
            return record(model, self.last, level1) >= cap

    return Observing


def record_trajectory(run: str, seed: int, cap: int, threads: int = 2) -> Dict:
    """Train with the observing stop (module docstring); ``{"rows": [...], "never_taught_probability": ...}``."""
    import torch
    from scipy.stats import ks_2samp

    import alter
    from alter.eval.evaluators import evaluate_qa
    from alter.experiments.compare.settings import CompareSettings
    from alter.experiments.compare.worker import build_data, starting_model, stop_reference
    from alter.train import AlterTrainer

    from pathlib import Path

    torch.set_num_threads(threads)
    never = json.loads((Path(run) / "methods" / "retain.json").read_text())["tofu"]["sets"]["forget"][
        "probability_per_item"]
    settings = CompareSettings.from_dict(json.loads((Path(run) / "settings.json").read_text()))
    if settings.dataset != "tofu":
        raise ValueError(f"{run} is a {settings.dataset!r} benchmark folder; the trajectory reads TOFU's")
    data = build_data(settings)
    model, tok, _ = starting_model(settings, data, False)
    values = {"phase2_epochs": settings.unlearn_epochs, "batch_size": settings.batch_size,
              "system_prompt": settings.system_prompt, **settings.alter, "seed": seed, "stop_level_scale": 1.0,
              "stop_stall_scale": -1.0}
    config = alter.AlterConfig.from_dict(values)
    rows: List[Dict] = []

    def record(wrapped, reading: float, level1: float) -> int:
        probs = evaluate_qa(wrapped, tok, data.forget_eval, system_prompt=settings.system_prompt, generate=False,
                            progress=False, batch_size=8)["probability_per_item"]
        step = config.phase2_min_steps + config.stop_check_every * len(rows)
        rows.append({"step": step, "reading": reading, "level1": level1, "forget_probability": sum(probs) / len(probs),
                     "ks_p": float(ks_2samp(probs, never).pvalue)})
        logger.info(json.dumps(rows[-1]))
        return step

    with mock.patch("alter.train.stopping.early_stop.ForgetLevelStop", _observer(record, cap)):
        trainer = AlterTrainer(model, tok, config, data.forget, data.retain, progress=False,
                               stop_reference=stop_reference(data))
        trainer.train()
    return {"split": settings.tofu_split, "seed": seed, "never_taught_probability": sum(never) / len(never), "rows": rows}


def simulate(trajectories: Sequence[Dict], scales: Sequence[float], stall_scales: Sequence[float]) -> List[Dict]:
    """Per (scale, stall scale, trajectory): the stop's step and the forget statistics there (None: not within
    the recorded checks)."""
    out = []
    for scale in scales:
        for stall in stall_scales:
            for t in trajectories:
                row = stop_step(t["rows"], scale, stall if stall >= 0 else None)
                out.append({"scale": scale, "stall_scale": stall, "split": t["split"], "seed": t["seed"],
                            "step": row["step"] if row else None,
                            "forget_probability": row["forget_probability"] if row else None,
                            "ks_p": row["ks_p"] if row else None})
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", help="a TOFU benchmark folder holding settings.json and methods/retain.json (record)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cap", type=int, default=90, help="the last step recorded")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", help="where to write the recorded trajectory")
    p.add_argument("--simulate", nargs="+", help="recorded trajectories to replay instead of training")
    p.add_argument("--scales", default="1,0.75,0.6,0.5")
    p.add_argument("--stall-scales", default="-1,1,1.25")
    a = p.parse_args(argv)
    if a.simulate:
        trajectories = [json.load(open(f)) for f in a.simulate]
        for r in simulate(trajectories, [float(x) for x in a.scales.split(",")],
                          [float(x) for x in a.stall_scales.split(",")]):
            print(json.dumps(r))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not (a.run and a.json):
        p.error("recording needs --run and --json (or give --simulate)")
    result = record_trajectory(a.run, a.seed, a.cap, a.threads)
    with open(a.json, "w") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
