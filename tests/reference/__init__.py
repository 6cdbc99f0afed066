"""Reference implementations used only by tests and benchmarks (never imported by the library)."""
