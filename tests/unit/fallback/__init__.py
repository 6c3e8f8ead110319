"""The chain walk (``ccr/_fallback.py``, ``_endpoints.py``): retries before fallback, CCR failover."""
