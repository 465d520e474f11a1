"""Shared fixtures: a seeded rng, tiny synthetic cubes, a cache of real test files, DDP env cleanup."""

from __future__ import annotations

import os

import numpy as np
import pytest

_DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "LOCAL_WORLD_SIZE")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _clean_ddp_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lightning writes MASTER_PORT & co. into os.environ; a later DDP run would then fail (STACK.md)."""
    for key in _DDP_ENV:
        if key in os.environ:
            monkeypatch.delenv(key)
