"""Shared fixtures: the model, the ggufembed binary and the project's reference data.

Nothing here skips: a test that needs the model, the binary or the reference data fails with a
message saying where it looked (`cargo xtask test` sets GGUFEMBED_MODEL and GGUFEMBED_BIN).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import ggufembed
from ggufembed_test_support import CHECKOUT, find_reference_dir, load_reference_set


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return find_reference_dir()


@pytest.fixture(scope="session")
def reference_set(reference_dir):
    return lambda name: load_reference_set(reference_dir, name)


@pytest.fixture(scope="session")
def model_path() -> Path:
    env = os.environ.get("GGUFEMBED_MODEL")
    if env:
        p = Path(env)
        assert p.is_file(), f"GGUFEMBED_MODEL={p} is not a file"
        return p
    return Path(ggufembed.default_model_path())


@pytest.fixture(scope="session")
def ggufembed_bin() -> Path:
    env = os.environ.get("GGUFEMBED_BIN")
    candidates = [Path(env)] if env else [CHECKOUT / "target" / "release" / "ggufembed"]
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    raise AssertionError(f"the ggufembed binary is not at {candidates}; set GGUFEMBED_BIN (cargo xtask test does)")


@pytest.fixture(scope="session")
def embedder(model_path) -> ggufembed.Embedder:
    """The Q8_0 embedder with 2 threads, shared by tests that need no special set-up."""
    return ggufembed.Embedder(model_path, threads=2)
