"""Shared scorers used by several benchmarks (VQA accuracy, ANLS, relaxed accuracy, grouped scores)."""
