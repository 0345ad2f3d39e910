"""The side-by-side comparison of ALTER with the baselines (``alter-train --demo --compare``)."""

from alter.experiments.compare.comparison import parse_methods, run_compare
from alter.experiments.compare.settings import ALL_METHODS, QUICK, CompareSettings

__all__ = ["ALL_METHODS", "QUICK", "CompareSettings", "parse_methods", "run_compare"]
