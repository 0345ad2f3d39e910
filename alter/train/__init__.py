"""Training: the two-phase ALTER trainer, its losses, batches, checkpoints and sub-domains."""

from alter.train.trainer import AlterTrainer, TrainReport

__all__ = ["AlterTrainer", "TrainReport"]
