"""The shipped harness (``ccr/testing/``): fake provider, reply shapes, HTTP server, lifecycle, tokens."""
