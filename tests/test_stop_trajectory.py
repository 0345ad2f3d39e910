"""Replaying recorded level-stop readings under other scales (alter/experiments/compare/stop_trajectory.py)
decides as the stop itself does (alter/train/stopping/level.py)."""

import pytest

from alter.experiments.compare.stop_trajectory import main, simulate, stop_step
from alter.train.stopping.level import ForgetLevelStop
from tests.test_answer_stop import FORGET

READINGS = [0.6, 0.3, 0.15, 0.11, 0.12, 0.13]      # falls, bottoms out at 0.11, rises again
ROWS = [{"step": 15 + 5 * i, "reading": r, "level1": 0.1, "forget_probability": r, "ks_p": 0.5}
        for i, r in enumerate(READINGS)]


@pytest.mark.parametrize("scale, stall, expected", [
    (6.0, None, 15),          # the first check is under a level this high
    (1.0, None, None),        # never at or under 0.1
    (1.0, 1.25, 35),          # 0.12 >= 0.11 and <= 0.125: stalled
    (1.0, 1.1, None),         # the rise happens above 0.11 (the stall level): no stall
    (1.5, 1.25, 25),          # 0.15 <= 0.15: the level itself (the stall scale under it: off)
    (1.0, 0.9, None),         # a stall scale under the level's is off
])
def test_the_replayed_stop_step(scale, stall, expected):
    row = stop_step(ROWS, scale, stall)
    assert (row["step"] if row else None) == expected


@pytest.mark.parametrize("scale, stall", [(1.0, 1.25), (1.5, 1.25), (1.0, None), (6.0, None)])
def test_the_replay_matches_the_stop_check_by_check(tiny_tokenizer, monkeypatch, scale, stall):
    stop = ForgetLevelStop(tiny_tokenizer, FORGET, n=4, scale=scale, every=1, min_step=1, seed=0, system_prompt=None,
                           stall_scale=stall, level=0.1 * scale, stall_level=0.1 * stall if stall else None)
    values = iter(READINGS)
    monkeypatch.setattr(stop, "_reading", lambda model: next(values))
    fired = next((r["step"] for r in ROWS if stop.forgotten(None)), None)
    row = stop_step(ROWS, scale, stall)
    assert fired == (row["step"] if row else None)


def test_simulate_covers_every_setting_and_the_cli_prints_it(tmp_path, capsys):
    import json

    path = tmp_path / "t.json"
    path.write_text(json.dumps({"split": "tune", "seed": 0, "rows": ROWS}))
    out = simulate([json.loads(path.read_text())], [1.0, 1.5], [-1.0, 1.25])
    assert [(r["scale"], r["stall_scale"], r["step"]) for r in out] == [(1.0, -1.0, None), (1.0, 1.25, 35),
                                                                        (1.5, -1.0, 25), (1.5, 1.25, 25)]
    assert main(["--simulate", str(path), "--scales", "1", "--stall-scales=1.25"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["step"] == 35
    with pytest.raises(SystemExit):
        main([])                                  # neither a run to record nor trajectories to replay
