"""Serve config files are valid for Ray Serve and name a builder that exists."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("serve-*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_serve_config_is_valid(path):
    schema = ServeDeploySchema.model_validate(yaml.safe_load(path.read_text()))
    for app in schema.applications:
        module, _, attr = app.import_path.partition(":")
        assert callable(getattr(importlib.import_module(module), attr))
        assert (path.parents[1] / app.args["config"]).is_file()


def test_there_is_a_config():
    assert CONFIGS
