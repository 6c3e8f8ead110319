"""Health checks, startup validation and the monitor (``ccr/_health.py``)."""
