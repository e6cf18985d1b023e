"""Shared fixtures: settings on the embedded defaults, and the in-process models (loaded once)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from models.router import Router  # noqa: E402
from models.tier1 import Tier1Models  # noqa: E402
from serve.settings import Settings, load_settings  # noqa: E402


@pytest.fixture(scope="session")
def settings() -> Settings:
    """The embedded defaults of configs/tierwise.yaml."""
    return load_settings()


@pytest.fixture(scope="session")
def router(settings) -> Router:
    """The router, in-process."""
    return Router.from_settings(settings)


@pytest.fixture(scope="session")
def tier1(settings) -> Tier1Models:
    """The tier-1 models, in-process."""
    return Tier1Models.from_settings(settings)
