"""Validated input, settings, errors, results (``ccr/_models.py``, ``_settings.py``, ``_errors.py``)."""
