"""Errors reach Python as the right exception types, with the runtime's message."""

from __future__ import annotations

import os

import numpy as np
import pytest

import ggufembed


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"truncate_dim": 100}, r"Matryoshka sizes \[768, 512, 256, 128\]"),
        ({"prompt_name": "nope"}, "unknown prompt_name"),
        ({"prompt_name": "query", "prompt": "x: "}, "not both"),
        ({"truncate": "middle"}, "truncate must be"),
    ],
)
def test_bad_arguments_are_value_errors(embedder, kwargs, match):
    with pytest.raises(ValueError, match=match):
        embedder.encode(["a"], **kwargs)


def test_wrong_types_are_type_errors(embedder):
    with pytest.raises(TypeError, match="text 1 is int"):
        embedder.encode(["a", 3])
    with pytest.raises(TypeError, match="bytes"):
        embedder.encode(b"bytes")
    with pytest.raises(TypeError):
        embedder.encode(["a"], batch_size=2.5)


def test_bad_constructor_arguments(model_path):
    with pytest.raises(ValueError, match="parallelism"):
        ggufembed.Embedder(model_path, parallelism="fast")
    with pytest.raises(ValueError, match="threads"):
        ggufembed.Embedder(model_path, threads=0)
    with pytest.raises(ValueError, match="per available core"):
        ggufembed.Embedder(model_path, threads=100_000)
    # An empty path is not the working directory ("is a directory"), a number is not a path.
    with pytest.raises(ValueError, match="empty path"):
        ggufembed.Embedder("")
    with pytest.raises(TypeError, match="model must be a path"):
        ggufembed.Embedder(42)


def test_a_bytes_path_is_a_path(model_path):
    e = ggufembed.Embedder(os.fsencode(model_path), threads=1)
    assert str(e.model_path) == os.path.abspath(model_path)


def test_model_problems_are_model_errors(tmp_path):
    with pytest.raises(ggufembed.ModelError, match="No such file"):
        ggufembed.Embedder(tmp_path / "missing.gguf")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(ggufembed.ModelError, match="junk.gguf"):
        ggufembed.Embedder(junk)
    assert not issubclass(ggufembed.ModelError, ValueError)


def test_a_text_the_model_cannot_embed(embedder):
    # <image_soft_token> tokenizes to an id past the embedding matrix (see embed-runtime's TextError).
    with pytest.raises(ggufembed.TextError) as e:
        embedder.encode(["fine", "fine", "an image: <image_soft_token>"])
    assert e.value.index == 2
    # The embedder is still usable.
    assert embedder.encode("fine").shape == (768,)


# A text the model refuses whatever the options: <image_soft_token> (see the test above).
REFUSED = "an image: <image_soft_token>"


class _CountingNative:
    """Stands in for an Embedder's native half and counts the runtime calls made through it."""

    def __init__(self, native):
        self._inner = native
        self.embed_calls = 0

    def embed(self, *args, **kwargs):
        self.embed_calls += 1
        return self._inner.embed(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._inner, name)


def test_text_error_index_is_the_position_in_the_caller_input(embedder):
    texts = [f"sentence number {i}" for i in range(50)]
    texts[40] = REFUSED
    calls = [
        lambda: embedder.encode(texts, batch_size=8),
        lambda: list(embedder.embed(texts, batch_size=8)),
        lambda: list(embedder.embed(iter(texts), batch_size=8)),
    ]
    for call in calls:
        with pytest.raises(ggufembed.TextError, match=r"^text 40: ") as e:
            call()
        assert e.value.index == 40
        assert isinstance(e.value, ValueError)


def test_embed_refuses_a_str_and_bytes_at_the_call(embedder):
    with pytest.raises(TypeError, match="not a str"):
        embedder.embed("hello")
    with pytest.raises(TypeError, match="bytes"):
        embedder.embed(b"hello")
    # One text is still one vector with encode.
    assert embedder.encode("hello").shape == (768,)


def test_a_lone_surrogate_names_its_text_before_any_work(embedder, monkeypatch):
    spy = _CountingNative(embedder._native)
    monkeypatch.setattr(embedder, "_native", spy)
    texts = ["ok"] * 40 + ["bad \ud800 text"]
    for call in (
        lambda: embedder.encode(texts, batch_size=8),
        lambda: embedder.embed(texts, batch_size=8),  # a list is checked at the call
    ):
        with pytest.raises(ggufembed.TextError, match=r"^text 40: character 4 is a lone surrogate") as e:
            call()
        assert e.value.index == 40
    assert spy.embed_calls == 0, "nothing was computed"
    # A stream is checked a batch at a time, still by the caller's index.
    with pytest.raises(ggufembed.TextError) as e:
        list(embedder.embed(iter(texts), batch_size=8))
    assert e.value.index == 40
    with pytest.raises(ggufembed.TextError) as e:
        embedder.tokenize(["ok", "\udfff"])
    assert e.value.index == 1
    with pytest.raises(ValueError, match="prompt: character 0 is a lone surrogate"):
        embedder.encode("ok", prompt="\ud800: ")


def test_numpy_integers_are_integers_and_bools_are_not(embedder, model_path):
    assert embedder.encode("a", truncate_dim=np.int64(256)).shape == (256,)
    assert embedder.encode(["a", "b", "c"], batch_size=np.int32(2)).shape == (3, 768)
    assert ggufembed.Embedder(model_path, threads=np.int64(1)).threads == 1
    for bad in (True, np.bool_(True), 2.0):
        with pytest.raises(TypeError, match="batch_size must be an int"):
            embedder.encode(["a"], batch_size=bad)
    # A flag is a flag, NumPy's too.
    long = "word " * 3000
    assert np.array_equal(embedder.encode(long, truncate=np.True_), embedder.encode(long, truncate=True))
    with pytest.raises(ggufembed.TextError, match="context"):
        embedder.encode(long, truncate=np.False_)


def test_huge_values_are_value_errors_before_anything_is_allocated(embedder, model_path):
    for dims in (10**12, 10**30):
        with pytest.raises(ValueError, match=r"truncate_dim .* is not one of the model's Matryoshka sizes"):
            embedder.encode(["a"] * 33, truncate_dim=dims)
    with pytest.raises(ValueError, match="threads"):
        ggufembed.Embedder(model_path, threads=10**30)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"truncate_dim": 100}, "Matryoshka"),
        ({"prompt_name": "nope"}, "unknown prompt_name"),
        ({"prompt_name": "query", "prompt": "x: "}, "not both"),
        ({"truncate": "middle"}, "truncate must be"),
    ],
)
def test_embed_checks_its_arguments_at_the_call(embedder, kwargs, match):
    with pytest.raises(ValueError, match=match):
        embedder.embed(iter(["a"]), **kwargs)  # no next(): the call itself raises
