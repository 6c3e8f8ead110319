"""The benchmarks (``benchmarks/``) still run and write their JSON: a smoke test, never timed."""
