"""Python vectors are bit-identical to the Rust library's, as the `ggufembed embed` CLI writes
them (GGUFEMBED_BIN), for the same texts and options."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

CASES = [
    # (CLI flags, encode options)
    ([], {}),
    (["--prompt", "query", "--dims", "256", "--renormalize"],
     {"prompt_name": "query", "truncate_dim": 256, "normalize_embeddings": True}),
    (["--prompt", "document", "--dims", "128"], {"prompt_name": "document", "truncate_dim": 128}),
]


@pytest.mark.parametrize(("flags", "options"), CASES, ids=["default", "query-256-renorm", "document-128-raw"])
def test_bit_identical_to_the_cli(embedder, ggufembed_bin, model_path, reference_set, tmp_path, flags, options):
    cases, _ = reference_set("dev-en")
    texts = [c["text"] for c in cases[:48]]
    long_cases, _ = reference_set("long")
    texts += [long_cases[0]["text"], "", "line one\nline two"]
    src = tmp_path / "texts.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    out = tmp_path / "vectors.npy"
    subprocess.run(
        [str(ggufembed_bin), "embed", "--model", str(model_path), "--input", str(src), "--jsonl",
         "--format", "npy", "--output", str(out), "--threads", "2", *flags],
        check=True,
    )
    want = np.load(out)
    got = embedder.encode(texts, batch_size=16, **options)
    assert got.dtype == want.dtype == np.float32
    assert got.shape == want.shape
    assert np.array_equal(got, want), f"{np.sum(got != want)} values differ"
