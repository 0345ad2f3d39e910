"""The run profiler's bookkeeping (alter/experiments/run_profile.py): parts timed, restored, summarised."""

import pytest

from alter.experiments import run_profile
from alter.train.stopping.early_stop import EarlyStop
from alter.train.trainer import AlterTrainer


def test_timed_parts_records_each_call_and_restores_the_methods():
    before = {name: getattr(cls, name) for cls, name in ((AlterTrainer, "prepare"), (AlterTrainer, "_step"),
                                                          (EarlyStop, "start"), (EarlyStop, "update"))}
    spans = []
    with run_profile._timed_parts(spans):
        assert EarlyStop.update is not before["update"]
        with pytest.raises(AttributeError):
            EarlyStop.update(None, 1, {}, None)           # fails inside: still recorded
    assert [p for p, _, _ in spans] == ["stop_update"]
    for name, fn in before.items():
        owner = EarlyStop if name in ("start", "update") else AlterTrainer
        assert getattr(owner, name) is fn


def test_summarise_splits_checks_from_plain_updates_and_reads_peaks_inside_each_part():
    gib = 2 ** 30
    spans = [("prepare", 0.0, 2.0), ("stop_update", 2.0, 2.001), ("stop_update", 3.0, 6.0),
             ("step_forward", 6.0, 7.0)]
    samples = [(1.0, 1 * gib), (4.0, 3 * gib), (6.5, 2 * gib), (9.0, 5 * gib)]
    out = run_profile.summarise(spans, samples, 0.0, 8.0)
    assert out["prepare"] == {"n": 1, "seconds": 2.0, "peak_gib": 1.0}
    assert out["stop_checks"] == {"n": 1, "seconds": 3.0, "peak_gib": 3.0}
    assert out["step_forward"]["peak_gib"] == 2.0
    assert out["total_s"] == 8.0 and out["rest_of_steps_s"] == 2.0 and out["peak_gib"] == 3.0   # 9.0 is after the run
    assert run_profile._setting("false") is False and run_profile._setting("0.5") == 0.5
    assert run_profile._setting("content") == "content"
