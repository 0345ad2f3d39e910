"""Data parallel on CPU: ``accelerate launch --cpu --num_processes 2`` (gloo) trains the same adapter
as one process with the same global batch, within float tolerance."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from alter.train.batches import rank_share

ROOT = Path(__file__).resolve().parents[1]


def test_rank_share_deals_examples_once_and_weights_the_average():
    assert rank_share([5, 6, 7, 8], 0, 1) == ([5, 6, 7, 8], 1.0)
    assert rank_share([5, 6, 7], 0, 2) == ([5, 7], 1.0) and rank_share([5, 6, 7], 1, 2) == ([6], 1.0)
    # one example for two processes: rank 1 runs it at weight 0, rank 0 at weight 2 (DDP halves it back)
    assert rank_share([5], 0, 2) == ([5], 2.0) and rank_share([5], 1, 2) == ([5], 0.0)


def _launch(n: int, out: Path) -> None:
    accelerate = shutil.which("accelerate") or str(Path(sys.executable).with_name("accelerate"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [accelerate, "launch", "--cpu", "--num_processes", str(n), "--num_machines", "1", "--mixed_precision",
           "no", "--dynamo_backend", "no", str(ROOT / "tests" / "ddp_train.py"), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_two_processes_train_the_same_adapter_as_one(tmp_path):
    _launch(1, tmp_path / "one")
    _launch(2, tmp_path / "two")
    one = load_file(tmp_path / "one" / "adapter" / "adapter_model.safetensors")
    two = load_file(tmp_path / "two" / "adapter" / "adapter_model.safetensors")
    assert one.keys() == two.keys()
    moved = [k for k in one if "lora_B" in k and one[k].abs().sum() > 0]
    assert moved, "nothing was trained"
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-6, msg=key)
