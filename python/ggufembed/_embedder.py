"""The sentence-transformers-style `Embedder` over the native module.

Everything here is argument checking, batching, progress and streaming. Prompts, truncation,
Matryoshka dimensions and normalisation are the Rust runtime's (`embed_runtime::EmbedOptions`);
this file only spells them the way sentence-transformers users expect.
"""

from __future__ import annotations

import itertools
import os
import sys
import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import Literal, Union, overload

import numpy as np

from ggufembed import _native

__all__ = ["Embedder", "TruncationWarning"]

Truncate = Union[bool, Literal["right", "left"]]
_PARALLELISM = ("auto", "coarse", "fine")


class TruncationWarning(UserWarning):
    """Some texts were longer than the model's context and were cut to fit it."""


def _truncation(truncate: Truncate) -> str:
    if truncate is True or truncate == "right":
        return "right"
    if truncate == "left":
        return "left"
    if truncate is False:
        return "error"
    raise ValueError(f"truncate must be True, False, 'right' or 'left', not {truncate!r}")


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, not {value}")
    return value


def _texts(sentences: object) -> list[str]:
    if isinstance(sentences, (bytes, bytearray)):
        raise TypeError("texts must be str, not bytes; decode them first")
    if not isinstance(sentences, Iterable):
        raise TypeError(f"expected a str or a list of str, not {type(sentences).__name__}")
    texts = list(sentences)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"text {i} is {type(t).__name__}, not str")
    return texts


class _Progress:
    """tqdm when it is installed, else a plain counter on stderr."""

    def __init__(self, total: int, enabled: bool) -> None:
        self._bar = None
        self._plain = False
        self._done = 0
        self._total = total
        if not enabled:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            self._plain = True
        else:
            self._bar = tqdm(total=total, desc="Embedding", unit="text")

    def update(self, n: int) -> None:
        self._done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self._plain:
            print(f"\rEmbedding: {self._done}/{self._total} texts", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._plain:
            print(file=sys.stderr, flush=True)


class Embedder:
    """EmbeddingGemma-300M from a GGUF file, run by the Rust runtime on this machine's CPU.

    ``Embedder()`` uses the default model (EmbeddingGemma-300M Q8_0, fetched and converted into
    the cache on first use); ``Embedder("model.gguf")`` loads a file. ``threads`` sets the size of
    this embedder's own worker pool (default: every core); ``parallelism`` is ``"auto"``,
    ``"coarse"`` (texts in parallel) or ``"fine"`` (each matmul split over the threads).

    Every call releases the GIL for its whole computation, so Python threads keep running and
    several threads may call one embedder at once. An embedder belongs to the process that made
    it: after ``os.fork()`` the child builds its own.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        threads: int | None = None,
        parallelism: Literal["auto", "coarse", "fine"] = "auto",
    ) -> None:
        if threads is not None:
            threads = _positive_int("threads", threads)
        if parallelism not in _PARALLELISM:
            raise ValueError(f"parallelism must be one of {_PARALLELISM}, not {parallelism!r}")
        path = None if model is None else os.fspath(model)
        self._native = _native.NativeEmbedder(path, threads=threads, parallelism=parallelism)

    def __repr__(self) -> str:
        return (
            f"Embedder(model={str(self.model_path)!r}, threads={self.threads}, "
            f"parallelism={self.parallelism!r}, isa={self._native.isa!r})"
        )

    # --- what the model is -------------------------------------------------------------------

    @property
    def dim(self) -> int:
        """Length of the full vectors (768)."""
        return self._native.dim

    @property
    def max_seq_length(self) -> int:
        """The model's context in tokens; longer texts are truncated (or refused)."""
        return self._native.context_length

    @property
    def prompts(self) -> dict[str, str]:
        """The model's named prompts (sentence-transformers' ``prompts``), name to prefix."""
        return dict(_native.NAMED_PROMPTS)

    @property
    def threads(self) -> int:
        """Worker threads of this embedder's pool."""
        return self._native.threads

    @property
    def parallelism(self) -> str:
        return self._native.parallelism

    @property
    def model_path(self) -> os.PathLike[str]:
        return self._native.model_path

    @property
    def isa(self) -> str:
        """The kernel instruction set the matmuls run on (e.g. ``Avx512Vnni``)."""
        return self._native.isa

    # --- embedding ---------------------------------------------------------------------------

    @overload
    def encode(self, sentences: str, **kwargs: object) -> np.ndarray: ...
    @overload
    def encode(self, sentences: Iterable[str], **kwargs: object) -> np.ndarray: ...

    def encode(
        self,
        sentences: str | Iterable[str],
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        convert_to_numpy: bool = True,
        normalize_embeddings: bool = False,
        truncate_dim: int | None = None,
        truncate: Truncate = True,
    ) -> np.ndarray:
        """Embeds one text (a ``(dims,)`` array) or a list of texts (an ``(n, dims)`` array).

        ``prompt_name`` picks one of the model's prompts (``"query"``, ``"document"``, ``"STS"``
        ... see ``prompts``), ``prompt`` gives a prefix of your own. ``truncate_dim`` keeps a
        Matryoshka prefix (768, 512, 256 or 128 values); like sentence-transformers it is not
        rescaled unless ``normalize_embeddings`` is true. Texts longer than ``max_seq_length``
        tokens are cut (``truncate=True`` or ``"right"`` keeps the start, ``"left"`` the end) and a
        ``TruncationWarning`` names them; ``truncate=False`` raises ``TextError`` instead.
        """
        if not convert_to_numpy:
            raise ValueError("only NumPy output is supported (convert_to_numpy=True)")
        single = isinstance(sentences, str)
        texts = [sentences] if single else _texts(sentences)
        batch_size = _positive_int("batch_size", batch_size)
        kwargs = self._call_options(prompt_name, prompt, truncate_dim, normalize_embeddings, truncate)
        dims = truncate_dim if truncate_dim is not None else self.dim
        progress = _Progress(len(texts), bool(show_progress_bar))
        truncated: list[int] = []
        try:
            if len(texts) <= batch_size:
                # One runtime call: the array NumPy gets owns the runtime's buffer (no copy).
                out, _, cut = self._native.embed(texts, **kwargs)
                truncated.extend(i for i, c in enumerate(cut) if c)
                progress.update(len(texts))
            else:
                out = np.empty((len(texts), dims), dtype=np.float32)
                for start in range(0, len(texts), batch_size):
                    batch = texts[start : start + batch_size]
                    part, _, cut = self._native.embed(batch, **kwargs)
                    out[start : start + len(batch)] = part
                    truncated.extend(start + i for i, c in enumerate(cut) if c)
                    progress.update(len(batch))
        finally:
            progress.close()
        if truncated:
            self._warn_truncated(truncated, len(texts))
        return out[0] if single else out

    def encode_query(self, sentences: str | Iterable[str], **kwargs: object) -> np.ndarray:
        """``encode`` with the model's ``query`` prompt (retrieval queries)."""
        return self.encode(sentences, prompt_name="query", **kwargs)  # type: ignore[arg-type]

    def encode_document(self, sentences: str | Iterable[str], **kwargs: object) -> np.ndarray:
        """``encode`` with the model's ``document`` prompt (passages to retrieve)."""
        return self.encode(sentences, prompt_name="document", **kwargs)  # type: ignore[arg-type]

    def embed(
        self,
        texts: Iterable[str],
        *,
        batch_size: int = 32,
        prompt_name: str | None = None,
        prompt: str | None = None,
        truncate_dim: int | None = None,
        normalize_embeddings: bool = False,
        truncate: Truncate = True,
    ) -> Iterator[np.ndarray]:
        """Streams one vector per text of any iterable (a generator, a file, a dataset column).

        Memory stays constant whatever the number of texts: ``batch_size`` texts are read,
        embedded in one call, and their vectors yielded before the next batch is read.
        """
        batch_size = _positive_int("batch_size", batch_size)
        kwargs = self._call_options(prompt_name, prompt, truncate_dim, normalize_embeddings, truncate)
        it = iter(texts)
        seen = 0
        while True:
            batch = list(itertools.islice(it, batch_size))
            if not batch:
                return
            for i, t in enumerate(batch):
                if not isinstance(t, str):
                    raise TypeError(f"text {seen + i} is {type(t).__name__}, not str")
            out, _, cut = self._native.embed(batch, **kwargs)
            if any(cut):
                self._warn_truncated([seen + i for i, c in enumerate(cut) if c], None)
            seen += len(batch)
            yield from out

    def tokenize(
        self,
        texts: str | Sequence[str],
        prompt_name: str | None = None,
        prompt: str | None = None,
        truncate: Truncate = True,
    ) -> list[list[int]]:
        """The token ids each text goes into the model as: ``<bos>``, prompt, text, ``<eos>``,
        after truncation to ``max_seq_length``."""
        batch = [texts] if isinstance(texts, str) else _texts(texts)
        return self._native.tokenize(batch, prompt_name=prompt_name, prompt=prompt, truncation=_truncation(truncate))

    # --- helpers -----------------------------------------------------------------------------

    def _call_options(
        self,
        prompt_name: str | None,
        prompt: str | None,
        truncate_dim: int | None,
        normalize: bool,
        truncate: Truncate,
    ) -> dict[str, object]:
        if truncate_dim is not None:
            truncate_dim = _positive_int("truncate_dim", truncate_dim)
        if prompt_name is not None and not isinstance(prompt_name, str):
            raise TypeError(f"prompt_name must be a str, not {type(prompt_name).__name__}")
        if prompt is not None and not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, not {type(prompt).__name__}")
        return {
            "prompt_name": prompt_name,
            "prompt": prompt,
            "dims": truncate_dim,
            "normalize": bool(normalize),
            "truncation": _truncation(truncate),
        }

    def _warn_truncated(self, indices: list[int], total: int | None) -> None:
        shown = ", ".join(map(str, indices[:10])) + (", ..." if len(indices) > 10 else "")
        of = f" of {total}" if total is not None else ""
        warnings.warn(
            TruncationWarning(
                f"{len(indices)} text(s){of} longer than the model's context of {self.max_seq_length} tokens "
                f"were truncated (indices {shown}); pass truncate=False to raise instead"
            ),
            stacklevel=3,
        )
