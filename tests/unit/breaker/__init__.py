"""The per-target circuit breaker (``ccr/_breaker.py``)."""
