"""The sentence-transformers-style API: shapes, options, batching, streaming, tokenize."""

from __future__ import annotations

import numpy as np
import pytest

import ggufembed

TEXTS = ["A man is playing a flute.", "Someone plays music.", "The stock market fell.", ""]


def test_single_text_is_a_vector_and_lists_are_matrices(embedder):
    v = embedder.encode("a text")
    assert v.shape == (768,) and v.dtype == np.float32
    m = embedder.encode(TEXTS)
    assert m.shape == (4, 768) and m.dtype == np.float32
    assert np.allclose(np.linalg.norm(m, axis=1), 1.0, atol=1e-5)
    assert embedder.encode([]).shape == (0, 768)
    # Related texts are closer than unrelated ones.
    assert m[0] @ m[1] > m[0] @ m[2]


def test_one_batch_is_handed_over_without_a_copy(embedder):
    m = embedder.encode(TEXTS)
    # NumPy owns the runtime's buffer through a base object; the matrix is a view of it.
    assert not m.flags["OWNDATA"] and m.base is not None
    assert m.flags["C_CONTIGUOUS"]


def test_a_vector_does_not_depend_on_batch_size(embedder, reference_set):
    cases, _ = reference_set("dev-en")
    texts = [c["text"] for c in cases[:40]]
    whole = embedder.encode(texts, batch_size=64)
    for bs in (1, 7, 32):
        assert np.array_equal(embedder.encode(texts, batch_size=bs), whole), bs
    assert np.array_equal(embedder.encode(texts[5]), whole[5])


def test_attributes(embedder, model_path):
    assert embedder.dim == 768
    assert embedder.max_seq_length == 2048
    assert embedder.threads == 2
    assert embedder.parallelism == "auto"
    assert str(embedder.model_path) == str(model_path)
    p = embedder.prompts
    assert p["query"] == "task: search result | query: "
    assert p["document"] == "title: none | text: "
    assert len(p) == 14
    assert ggufembed.MATRYOSHKA_DIMS == [768, 512, 256, 128]
    assert "Embedder(" in repr(embedder)


def test_query_and_document_prompts(embedder):
    q = embedder.encode_query("who plays the flute?")
    assert np.array_equal(q, embedder.encode("who plays the flute?", prompt_name="query"))
    assert np.array_equal(q, embedder.encode("who plays the flute?", prompt="task: search result | query: "))
    d = embedder.encode_document(TEXTS[:2])
    assert np.array_equal(d, embedder.encode(TEXTS[:2], prompt_name="document"))
    assert not np.array_equal(d[0], embedder.encode(TEXTS[0]))


def test_matryoshka_like_sentence_transformers(embedder):
    full = embedder.encode(TEXTS[:3])
    raw = embedder.encode(TEXTS[:3], truncate_dim=256)
    assert raw.shape == (3, 256)
    # truncate_dim alone keeps the raw prefix; with normalize_embeddings it is rescaled.
    assert np.array_equal(raw, full[:, :256])
    unit = embedder.encode(TEXTS[:3], truncate_dim=256, normalize_embeddings=True)
    assert np.allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)
    assert np.allclose(unit, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-6)


def test_streaming_reads_one_batch_ahead_at_most(embedder):
    pulled = 0

    def source():
        nonlocal pulled
        for i in range(50):
            pulled += 1
            yield f"text number {i}"

    stream = embedder.embed(source(), batch_size=8)
    first = next(stream)
    assert first.shape == (768,)
    assert pulled == 8, "only the first batch was read"
    rest = list(stream)
    assert len(rest) == 49 and pulled == 50
    want = embedder.encode([f"text number {i}" for i in range(50)])
    assert np.array_equal(np.stack([first, *rest]), want)


def test_tokenize_gives_the_model_input(embedder, reference_set):
    cases, _ = reference_set("dev-en")
    ids = embedder.tokenize([c["text"] for c in cases[:20]])
    assert ids == [c["ids"] for c in cases[:20]]
    assert embedder.tokenize("") == [[2, 1]]
    q, _ = reference_set("dev-en-query")
    assert embedder.tokenize(q[0]["text"], prompt_name="query") == [q[0]["ids"]]


def test_long_texts_are_truncated_and_reported(embedder):
    long = "word " * 3000
    with pytest.warns(ggufembed.TruncationWarning, match=r"1 text\(s\) of 2 .*indices 1\b"):
        out = embedder.encode(["short", long])
    assert out.shape == (2, 768)
    assert len(embedder.tokenize(long)[0]) == 2048
    with pytest.raises(ggufembed.TextError) as e:
        embedder.encode(["short", long], truncate=False)
    assert e.value.index == 1 and "2048" in str(e.value)
    assert isinstance(e.value, ValueError)
    # Left truncation keeps the end of the text.
    left = embedder.tokenize("start " + long, truncate="left")[0]
    right = embedder.tokenize("start " + long)[0]
    assert left != right and len(left) == 2048


def test_progress_bar_without_tqdm(embedder, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_tqdm(name, *args, **kwargs):
        if name.startswith("tqdm"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    out = embedder.encode(TEXTS * 3, batch_size=5, show_progress_bar=True)
    assert out.shape == (12, 768)
    assert "Embedding: 12/12 texts" in capsys.readouterr().err
