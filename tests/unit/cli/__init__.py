"""The ``ccr-client`` command (``ccr/cli/``): exit codes, one-line errors, what it prints."""
