"""jobpool benchmarks: ``python benchmarks/run.py [--quick] [--json PATH]``."""
