"""verify and loadtest (``ccr/ops/``), built on the public API only."""
