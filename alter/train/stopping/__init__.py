"""When phase II ends (docs/method.md section 4): the rules and the object that combines them.

- :mod:`.level` — the default: forget answers, scored as generation would, fall to a level estimated
  from the data (mismatched answers under the starting model);
- :mod:`.window` — counts over the last steps' training forwards (hinge tokens above the margin, the
  forget answers' teacher-forced probability); off by default;
- :mod:`.answer_overlap` — greedy answers' ROUGE-L recall; off by default;
- :mod:`.early_stop` — :class:`EarlyStop`, what the trainer calls after every step.
"""

from alter.train.stopping.early_stop import EarlyStop

__all__ = ["EarlyStop"]
