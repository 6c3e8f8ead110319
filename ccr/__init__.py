"""ccr-client: a typed asyncio client for Claude Code Router (placeholder, being built)."""

from ccr._version import __version__

__all__ = ["__version__"]
