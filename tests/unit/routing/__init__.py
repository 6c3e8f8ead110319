"""Policies, decisions and the reservation bound (``ccr/_policy.py``, ``_routing.py``, ``_estimate.py``)."""
