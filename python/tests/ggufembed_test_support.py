"""Helpers shared by the Python tests (a module of its own, not conftest.py, so that test
folders elsewhere in the repository can have their own conftest.py in the same pytest run)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np

CHECKOUT = Path(__file__).resolve().parents[2]

# The bars of crates/embed-runtime/tests/it/support.rs.
Q8_0_MIN_COSINE = 0.9993
Q8_0_MEAN_COSINE = 0.9996

def _holds(d: Path) -> bool:
    return (d / "emb-dev-en.jsonl").is_file()


def _clone_origin(checkout: Path) -> Path | None:
    """The local folder `checkout` was cloned from, if its origin remote is a local path."""
    try:
        out = subprocess.run(
            ["git", "-C", str(checkout), "config", "--get", "remote.origin.url"],
            capture_output=True, text=True, check=False,
        )
    except OSError:
        return None
    p = Path(out.stdout.strip().removeprefix("file://"))
    return p if out.returncode == 0 and p.is_absolute() and p.is_dir() else None


def find_reference_dir() -> Path:
    """Same search as model_fetch::testing::reference_dir: GGUFEMBED_REFERENCE, else
    shared/reference beside the checkout or a folder above it, else beside the repository this
    checkout was cloned from."""
    env = os.environ.get("GGUFEMBED_REFERENCE")
    if env:
        d = Path(env)
        assert _holds(d), f"GGUFEMBED_REFERENCE={d} holds no reference data"
        return d
    roots = [CHECKOUT, *CHECKOUT.parents]
    origin = _clone_origin(CHECKOUT)
    if origin is not None:
        roots += [origin, *origin.parents]
    looked = []
    for root in roots:
        d = root / "shared" / "reference"
        if _holds(d):
            return d
        looked.append(str(d))
    raise AssertionError(
        "reference data (shared/reference) not found; set GGUFEMBED_REFERENCE. Looked in: " + ", ".join(looked)
    )


def load_reference_set(reference_dir: Path, name: str) -> tuple[list[dict], np.ndarray]:
    lines = (reference_dir / f"emb-{name}.jsonl").read_text(encoding="utf-8").splitlines()
    cases = [json.loads(line) for line in lines if line.strip()]
    vectors = np.load(reference_dir / f"emb-{name}.npy")
    assert vectors.shape[0] == len(cases), f"{name}: rows match jsonl lines"
    return cases, vectors


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
