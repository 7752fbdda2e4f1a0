"""Errors reach Python as the right exception types, with the runtime's message."""

from __future__ import annotations

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
