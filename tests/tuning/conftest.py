"""Fixtures of the tuner's tests (the tiny dataset itself comes from tests/conftest.py)."""

import os
import pathlib

import pytest


@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory) -> pathlib.Path:
    """A directory every xdist worker of this session sees (this session's own temp dir without xdist)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
