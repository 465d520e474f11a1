"""Repository-level pytest settings for ``--doctest-modules`` (the fixtures live in tests/conftest.py)."""

from __future__ import annotations

# `panel serve` scripts, not modules: importing them starts the app or its warm-up
collect_ignore = ["gui/app.py", "gui/warm.py"]
