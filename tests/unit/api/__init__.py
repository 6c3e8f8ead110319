"""The front door (``ccr/__init__.py``): the pinned ``__all__`` and the docs' generated reference."""
