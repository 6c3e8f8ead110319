"""Events and hooks (``ccr/_events.py``): what a route emits, filters, the guard, headers."""
