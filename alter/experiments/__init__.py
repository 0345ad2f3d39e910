"""Experiment tooling on top of the library: the demo (:mod:`alter.experiments.demo`), the side-by-side
comparison and learning-rate sweeps behind ``alter-bench`` (:mod:`alter.experiments.compare`) and
their charts (:mod:`alter.experiments.plots`)."""
