"""The Messages API shapes in and out (``ccr/_messages.py``)."""
