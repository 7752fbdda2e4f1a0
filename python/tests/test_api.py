"""The sentence-transformers-style API: shapes, options, batching, streaming, tokenize."""

from __future__ import annotations

import ast
import concurrent.futures
import copy
import inspect
import itertools
import multiprocessing
import os
import pickle
import subprocess
import typing
import warnings
from pathlib import Path

import numpy as np
import pytest

import ggufembed
from ggufembed_test_support import CHECKOUT

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


def test_the_readme_streaming_example_gives_the_cli_vectors(embedder, ggufembed_bin, model_path, tmp_path, monkeypatch):
    readme = (CHECKOUT / "README.md").read_text(encoding="utf-8")
    python = readme[readme.index("## Python") :]
    block = python[python.index("```python") : python.index("```", python.index("```python") + 3)]
    lines = block.splitlines()
    start = next(i for i, line in enumerate(lines) if "texts.txt" in line)
    # The example's statement: its first line and the indented lines under it, with the loop's
    # `...` body made to collect the vectors.
    example = [lines[start]] + list(itertools.takewhile(lambda line: line.startswith(" "), lines[start + 1 :]))
    code = "\n".join(example).replace(": ...", ": vectors.append(vec)")
    assert "vectors.append" in code, code
    monkeypatch.chdir(tmp_path)
    (tmp_path / "texts.txt").write_text("A man is playing a flute.\nA woman is slicing an onion.\n\nlast\n", encoding="utf-8")
    scope = {"m": embedder, "vectors": []}
    exec(code, scope)
    subprocess.run(
        [str(ggufembed_bin), "embed", "--model", str(model_path), "--input", "texts.txt", "--format", "npy",
         "--output", "cli.npy", "--threads", "2"],
        check=True,
    )
    assert np.array_equal(np.stack(scope["vectors"]), np.load(tmp_path / "cli.npy"))


def test_truncation_warnings_point_at_the_callers_line(embedder):
    long = "word " * 3000
    for call in (
        lambda: embedder.encode(long),
        lambda: embedder.encode_query(long),
        lambda: embedder.encode_document([long]),
        lambda: list(embedder.embed([long])),
    ):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call()
        assert [w.category for w in caught] == [ggufembed.TruncationWarning]
        assert caught[0].filename == __file__, caught[0].filename


def test_left_truncation_cuts_the_prompt_first(embedder):
    # Documented (README, encode's docstring): the prompt counts as text, as in TEI.
    # The prompt's first tokens ("task: search"; its last one merges with the text's first).
    prompt_start = embedder.tokenize("", prompt_name="query")[0][1:4]
    long = "word " * 3000 + "the end"
    right = embedder.tokenize(long, prompt_name="query")[0]
    left = embedder.tokenize(long, prompt_name="query", truncate="left")[0]
    assert right[1:4] == prompt_start
    assert prompt_start[0] not in left and left[-3:] == embedder.tokenize("x the end")[0][-3:]
    assert "prompt" in ggufembed.Embedder.encode.__doc__.split("truncate=False")[1]


def test_annotations_and_stubs_match_the_runtime(embedder):
    from ggufembed import _native

    assert isinstance(embedder.model_path, Path)
    assert typing.get_type_hints(ggufembed.Embedder.model_path.fget)["return"] is Path
    for f in (ggufembed.Embedder.encode, ggufembed.Embedder.encode_query, ggufembed.Embedder.encode_document):
        kinds = [p.kind for p in inspect.signature(f).parameters.values()]
        assert inspect.Parameter.VAR_KEYWORD not in kinds, f"{f.__name__} names its keywords"
    with pytest.raises(TypeError):
        embedder.encode("a", bogus=1)
    stub = ast.parse((CHECKOUT / "python" / "ggufembed" / "_native.pyi").read_text(encoding="utf-8"))
    declared = next(
        ast.literal_eval(node.value) for node in stub.body
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets)
    )
    assert set(declared) == {n for n in dir(_native) if not n.startswith("_")} | {"__version__"}
    cls = next(n for n in stub.body if isinstance(n, ast.ClassDef) and n.name == "NativeEmbedder")
    methods = {f.name for f in cls.body if isinstance(f, ast.FunctionDef)}
    # PyO3's #[new] is __new__; the class cannot be subclassed, so the stub says @final.
    assert "__new__" in methods and "__init__" not in methods
    assert any(getattr(d, "id", None) == "final" for d in cls.decorator_list)
    with pytest.raises(TypeError):
        type("Sub", (_native.NativeEmbedder,), {})


def test_a_pickle_holds_how_to_build_the_embedder(embedder, model_path):
    clone = pickle.loads(pickle.dumps(embedder))
    assert clone is not embedder
    assert clone.model_path == Path(os.path.abspath(embedder.model_path))
    assert (clone.threads, clone.parallelism) == (2, "auto")
    np.testing.assert_array_equal(clone.encode(TEXTS), embedder.encode(TEXTS))
    # No thread count given: the receiving process uses its own cores, not this one's count.
    default = ggufembed.Embedder(model_path, parallelism="fine")
    assert pickle.loads(pickle.dumps(default))._args[1:] == (None, "fine")
    # Copies share the model: an embedder never changes after it is built.
    assert copy.copy(embedder) is embedder
    assert copy.deepcopy({"m": embedder})["m"] is embedder
    # A subclass comes back as itself.
    assert type(pickle.loads(pickle.dumps(MyEmbedder(model_path, threads=1)))) is MyEmbedder


class MyEmbedder(ggufembed.Embedder):
    """A user's subclass (module level, as pickle needs)."""


def test_a_relative_model_path_is_kept_absolute(model_path, tmp_path, monkeypatch):
    monkeypatch.chdir(model_path.parent)
    m = ggufembed.Embedder(model_path.name, threads=1)
    assert m.model_path == Path(os.path.abspath(model_path)) and m.model_path.is_absolute()
    monkeypatch.chdir(tmp_path)
    assert m.model_path.is_file() and pickle.loads(pickle.dumps(m)).model_path == m.model_path


def test_a_worker_process_embeds_with_the_embedder_it_was_passed(embedder):
    # "spawn", the start method of macOS and Windows: a fresh interpreter loads the model itself.
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        there = pool.submit(embedder.encode, TEXTS, prompt_name="query").result(timeout=300)
    np.testing.assert_array_equal(there, embedder.encode(TEXTS, prompt_name="query"))


def test_similarity_is_the_models_cosine(embedder):
    q = embedder.encode_query("who plays the flute?")
    d = embedder.encode_document(["A man is playing a flute.", "The stock market fell."])
    s = embedder.similarity(q, d)
    assert s.shape == (1, 2) and s.dtype == np.float32
    assert s[0, 0] > s[0, 1], s  # the passage that answers ranks first
    want = (d / np.linalg.norm(d, axis=1, keepdims=True)) @ (q / np.linalg.norm(q))
    np.testing.assert_allclose(s[0], want, rtol=1e-6)
    # Raw Matryoshka prefixes are not unit length; cosine does not care.
    p = embedder.encode(["a flute", "a market"], truncate_dim=128)
    assert abs(np.linalg.norm(p[0]) - 1) > 1e-3
    np.testing.assert_allclose(np.diag(ggufembed.Embedder.similarity(p, p)), 1, rtol=1e-6)
    assert embedder.similarity(np.zeros(768), q)[0, 0] == 0
    with pytest.raises(ValueError, match="length 768 and b of length 128"):
        embedder.similarity(q, p)
    with pytest.raises(ValueError):
        embedder.similarity(np.zeros((2, 2, 2)), q)
    with pytest.raises(ValueError, match=r"not shape \(0,\)"):
        embedder.similarity([], [])
    with pytest.raises(TypeError):
        embedder.similarity("not a vector", q)
    # Numbers only, as sentence-transformers' tensors: no digit strings, no complex values.
    with pytest.raises(TypeError):
        embedder.similarity(["1", "2"], [1, 2])
    with pytest.raises(TypeError):
        embedder.similarity([1 + 1j, 2], [1, 2])
    with pytest.raises(ValueError):
        embedder.similarity([np.nan, 1], [1, 2])
    # Any magnitude: no square overflows (1e20² is past float32, 1e200² past float64).
    for big in (1e20, 1e200, 1e-30):
        np.testing.assert_allclose(embedder.similarity([big, big], [[big, big], [big, -big]]), [[1, 0]], atol=1e-6)
