"""The installed version, for spans, load-test archives and ``--version``."""

__version__ = "0.1.0"
