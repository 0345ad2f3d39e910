"""Train ALTER on the tiny model under ``accelerate launch`` and save the adapter (rank 0).

    accelerate launch --cpu --num_processes N tests/ddp_train.py OUT_DIR

Used by tests/test_multiprocess.py to compare N = 2 with N = 1 on the same global batches. Every
example has the same number of tokens, so each process's per-token mean is the global mean's share.
"""

import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
# a script's own folder comes first on sys.path, and tests/kernels there would shadow the `kernels` package
# that transformers imports when it is installed (transformers 5.25 pulls it in): only the repository root
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

import alter  # noqa: E402
from alter.data.schema import QAExample  # noqa: E402
from alter.train import AlterTrainer  # noqa: E402
from tests.helpers import make_tiny_llama, make_tiny_tokenizer  # noqa: E402

NAMES = ["Ana", "Bo", "Cy", "Di", "Ed", "Fa", "Gu", "Ho", "Ia", "Jo"]
FORGET = [QAExample(f"Who is {n}?", f"{n} paints blue owls at night.", domain="ana") for n in NAMES[:4]]
RETAIN = [QAExample(f"Who is {n}?", f"{n} sells red cars in town.") for n in NAMES[4:9]]   # 9 items: a last step of 1


def main(out: str) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    tok = make_tiny_tokenizer()
    cfg = alter.AlterConfig(batch_size=4, phase1_epochs=1, phase2_epochs=2, lr_phase1=1e-2, lr_phase2=1e-2,
                            phase2_min_steps=0, max_grad_norm=0.0)
    trainer = AlterTrainer(make_tiny_llama(len(tok)), tok, cfg, FORGET, RETAIN, output_dir=out, progress=False)
    trainer.train()


if __name__ == "__main__":
    main(sys.argv[1])
