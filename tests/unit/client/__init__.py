"""The request path through ``CCRClient`` (``ccr/_client.py``): fallback, quotas, breaker, hooks."""
