"""Unit tests, one folder per area of ``ccr/`` (see docs/testing.md, "The unit test tree")."""
