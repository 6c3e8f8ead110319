"""Quotas (``ccr/_quota/``): the manager, the stores (one contract), the pipeline, Redis options, URLs."""
