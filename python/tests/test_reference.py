"""Vectors through Python against sentence-transformers' (../shared/reference), with the same
bars as the Rust tests (crates/embed-runtime/tests/it/reference.rs)."""

from __future__ import annotations

import numpy as np
import pytest

from ggufembed_test_support import Q8_0_MEAN_COSINE, Q8_0_MIN_COSINE, cosine

SETS = [
    # (reference set, encode options)
    ("dev-en", {}),
    ("dev-en-query", {"prompt_name": "query"}),
    ("dev-en-document", {"prompt_name": "document"}),
    ("dev-en-dim256", {"truncate_dim": 256}),
    ("dev-en-dim256-renorm", {"truncate_dim": 256, "normalize_embeddings": True}),
]


@pytest.mark.parametrize(("name", "options"), SETS, ids=[s[0] for s in SETS])
def test_q8_0_matches_sentence_transformers(embedder, reference_set, name, options):
    cases, want = reference_set(name)
    texts = [c["text"] for c in cases]
    got = embedder.encode(texts, **options)
    assert got.shape == want.shape
    cos = cosine(got, want)
    print(f"{name}: n = {len(texts)}, cosine min {cos.min():.6f}, mean {cos.mean():.6f}")
    assert cos.min() >= Q8_0_MIN_COSINE, f"{name}: min cosine {cos.min()} (text {cos.argmin()})"
    assert cos.mean() >= Q8_0_MEAN_COSINE, f"{name}: mean cosine {cos.mean()}"
    # Norms: 1 for full or renormalised vectors, the reference's (~0.6) for raw prefixes.
    ratio = np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert np.all(np.abs(ratio - 1) < 0.01)
    # The ids that went in are the reference's.
    prompt = options.get("prompt_name")
    assert embedder.tokenize(texts, prompt_name=prompt) == [c["ids"] for c in cases]
