"""Data: one QA schema for every benchmark, readers for files and hub datasets, synthetic authors."""
