"""The sentence-transformers-style `Embedder` over the native module.

Everything here is argument checking, batching, progress and streaming. Prompts, truncation,
Matryoshka dimensions and normalisation are the Rust runtime's (`embed_runtime::EmbedOptions`);
this file only spells them the way sentence-transformers users expect.
"""

from __future__ import annotations

import itertools
import operator
import os
import sys
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal, TypedDict, Union

import numpy as np

from ggufembed import _native

__all__ = ["Embedder", "TruncationWarning"]

Truncate = Union[bool, Literal["right", "left"]]
_Truncation = Literal["right", "left", "error"]
_PARALLELISM = ("auto", "coarse", "fine")


class _Options(TypedDict):
    """The keywords of one `NativeEmbedder.embed` call."""

    prompt_name: str | None
    prompt: str | None
    dims: int | None
    normalize: bool
    truncation: _Truncation


class TruncationWarning(UserWarning):
    """Some texts were longer than the model's context and were cut to fit it."""


def _truncation(truncate: Truncate) -> _Truncation:
    # NumPy's booleans too (a flag read from an array or a config loaded with NumPy).
    if isinstance(truncate, np.bool_):
        truncate = bool(truncate)
    if truncate is True or truncate == "right":
        return "right"
    if truncate == "left":
        return "left"
    if truncate is False:
        return "error"
    raise ValueError(f"truncate must be True, False, 'right' or 'left', not {truncate!r}")


def _positive_int(name: str, value: object) -> int:
    # operator.index takes what Python takes as an integer (NumPy's too, as sentence-transformers
    # does) and refuses floats; a bool is an int to Python but never a count.
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    try:
        n = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be an int, not {type(value).__name__}") from None
    if n < 1:
        raise ValueError(f"{name} must be at least 1, not {n}")
    return n


def _matryoshka_dim(name: str, value: object) -> int:
    """``value`` if it is one of the model's Matryoshka sizes. Checked here, before anything is
    allocated from it or it is converted to a machine integer, with the runtime's wording."""
    n = _positive_int(name, value)
    if n not in _native.MATRYOSHKA_DIMS:
        raise ValueError(f"{name} {n} is not one of the model's Matryoshka sizes {_native.MATRYOSHKA_DIMS}")
    return n


def _prompt_name(value: object) -> str:
    """``value`` if it names one of the model's prompts, with the runtime's wording."""
    if not isinstance(value, str):
        raise TypeError(f"prompt_name must be a str, not {type(value).__name__}")
    names = [name for name, _ in _native.NAMED_PROMPTS]
    if value not in names:
        raise ValueError(f"unknown prompt_name {value!r}; the model's prompts are {names}")
    return value


def _text_error(index: int, reason: str) -> _native.TextError:
    """A ``TextError`` as the runtime makes them: the message starts with "text INDEX: "."""
    err = _native.TextError(f"text {index}: {reason}")
    err.index = index
    return err


def _in_call(e: _native.TextError, offset: int) -> _native.TextError:
    """``e``, raised by a runtime call on a batch that starts at ``offset`` of the caller's
    input, with ``index`` (and the message's "text N") counted from the start of that input."""
    if offset == 0:
        return e
    message = str(e)
    prefix = f"text {e.index}: "
    return _text_error(e.index + offset, message[len(prefix) :] if message.startswith(prefix) else message)


def _lone_surrogate(value: str) -> str | None:
    """Why the runtime cannot take ``value``, if it holds a lone surrogate (Python allows them,
    UTF-8 does not); an ASCII string cannot hold one, and is not copied to find out."""
    if value.isascii():
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"character {e.start} is a lone surrogate ({value[e.start]!r}), which is not valid Unicode"
    return None


def _check_utf8(name: str, value: str) -> None:
    reason = _lone_surrogate(value)
    if reason is not None:
        raise ValueError(f"{name}: {reason}")


def _check_texts(texts: Sequence[object], offset: int = 0) -> None:
    """Every text is a ``str`` the runtime can take; ``offset`` is the position of ``texts[0]`` in
    the caller's input, so that errors name the caller's index."""
    for i, t in enumerate(texts, offset):
        if not isinstance(t, str):
            raise TypeError(f"text {i} is {type(t).__name__}, not str")
        reason = _lone_surrogate(t)
        if reason is not None:
            raise _text_error(i, reason)


def _texts(sentences: object) -> list[str]:
    if isinstance(sentences, (bytes, bytearray)):
        raise TypeError("texts must be str, not bytes; decode them first")
    if not isinstance(sentences, Iterable):
        raise TypeError(f"expected a str or a list of str, not {type(sentences).__name__}")
    texts = list(sentences)
    # The whole input is checked before the first batch is computed.
    _check_texts(texts)
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
    several threads may call one embedder at once. Worker threads belong to the process that
    started them: after ``os.fork()`` the child's first call builds the child's own from the
    same file and settings, and a pickle carries that recipe to another process.
    """

    def __init__(
        self,
        model: str | bytes | os.PathLike[str] | os.PathLike[bytes] | None = None,
        *,
        threads: int | None = None,
        parallelism: Literal["auto", "coarse", "fine"] = "auto",
    ) -> None:
        if threads is not None:
            threads = _positive_int("threads", threads)
            # The runtime refuses more than a few threads per core with its own message; a count
            # past a machine integer would fail converting, as OverflowError, before it got there.
            if threads > sys.maxsize:
                raise ValueError(f"{threads} threads is far more than this machine's cores")
        if parallelism not in _PARALLELISM:
            raise ValueError(f"parallelism must be one of {_PARALLELISM}, not {parallelism!r}")
        # Absolute, so that `model_path`, a pickle and a forked child all name the same file
        # whatever the working directory becomes. A bytes path is the file system's own name.
        if model is not None and not isinstance(model, (str, bytes, os.PathLike)):
            raise TypeError(f"model must be a path (str or os.PathLike), not {type(model).__name__}")
        path = None if model is None else os.path.abspath(os.fsdecode(model))
        if model is not None and not os.fsdecode(model):
            # abspath("") is the working directory, which would be refused as "a directory".
            raise ValueError("model is an empty path; pass None for the default model")
        # How to build this embedder again, as the caller asked for it (no path: the default
        # model; no thread count: the process's own cores): what a pickle carries, and what a
        # forked child rebuilds from.
        self._args = (path, threads, parallelism)
        self._build()

    def _build(self) -> None:
        """Loads the model and starts this process's worker threads, from the recipe."""
        model, threads, parallelism = self._args
        self._native = _native.NativeEmbedder(model, threads=threads, parallelism=parallelism)
        self._pid = os.getpid()

    def __reduce__(self) -> tuple[object, ...]:
        # A loaded model and a thread pool cannot cross a process boundary, so a pickle holds the
        # recipe and the receiving process loads the file itself (a memory map, ~0.1 s with a warm
        # page cache): `multiprocessing`, `concurrent.futures` and Ray can pass an embedder to
        # their workers. Its vectors there are bit-identical to this one's.
        return (_rebuild, (type(self), *self._args))

    def _here(self) -> _native.NativeEmbedder:
        """The native embedder of this process. After ``fork()`` the child has the parent's
        object but not its worker threads: the first call there builds the child's own from the
        recipe, so a global embedder or a fork pool's ``initargs`` just work."""
        if self._pid != os.getpid():
            # Never dropped in the child: its pool's locks may have been held by parent threads
            # at the fork, and dropping it could wait on them.
            _INHERITED.append(self._native)
            self._build()
        return self._native

    def __copy__(self) -> Embedder:
        # Nothing about an embedder changes after it is built and calls may share it, so a copy
        # is the same object rather than a second model in memory.
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Embedder:
        return self

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
    def model_path(self) -> Path:
        """The GGUF file this embedder loaded."""
        return self._native.model_path

    @property
    def isa(self) -> str:
        """The kernel instruction set the matmuls run on (e.g. ``Avx512Vnni``)."""
        return self._native.isa

    # --- embedding ---------------------------------------------------------------------------

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
        ``TruncationWarning`` names them; ``truncate=False`` raises ``TextError`` instead. The
        prompt counts as part of the text: ``"left"`` drops the prompt's tokens first (as TEI
        does), so a text that long is embedded without its prompt.

        Every text is checked (a ``str``, valid Unicode) before the first batch is computed. A
        ``TextError``'s ``index`` is the text's position in ``sentences``; no vector of the call
        is returned, though the batches before it have been computed.
        """
        return self._encode(
            sentences, prompt_name, prompt, batch_size, show_progress_bar, convert_to_numpy,
            normalize_embeddings, truncate_dim, truncate,
        )

    def encode_query(
        self,
        sentences: str | Iterable[str],
        *,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        convert_to_numpy: bool = True,
        normalize_embeddings: bool = False,
        truncate_dim: int | None = None,
        truncate: Truncate = True,
    ) -> np.ndarray:
        """``encode`` with the model's ``query`` prompt (retrieval queries)."""
        return self._encode(
            sentences, "query", None, batch_size, show_progress_bar, convert_to_numpy,
            normalize_embeddings, truncate_dim, truncate,
        )

    def encode_document(
        self,
        sentences: str | Iterable[str],
        *,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        convert_to_numpy: bool = True,
        normalize_embeddings: bool = False,
        truncate_dim: int | None = None,
        truncate: Truncate = True,
    ) -> np.ndarray:
        """``encode`` with the model's ``document`` prompt (passages to retrieve)."""
        return self._encode(
            sentences, "document", None, batch_size, show_progress_bar, convert_to_numpy,
            normalize_embeddings, truncate_dim, truncate,
        )

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
        embedded in one call, and their vectors yielded before the next batch is read. Texts are
        taken as they are: a line read from a file keeps its ``"\\n"``, which is a token and
        changes the vector, so strip line ends first.

        Arguments are checked at the call, and a list or tuple of texts is checked whole before
        the first batch; an iterator's texts are checked a batch at a time. A ``str`` is refused
        (``TypeError``) rather than read character by character: ``encode`` takes one text.
        A ``TextError``'s ``index`` is the text's position in ``texts``.
        """
        if isinstance(texts, str):
            raise TypeError("embed takes an iterable of texts, not a str; for one text use encode(text) or embed([text])")
        if isinstance(texts, (bytes, bytearray)):
            raise TypeError("texts must be str, not bytes; decode them first")
        if not isinstance(texts, Iterable):
            raise TypeError(f"embed takes an iterable of str, not {type(texts).__name__}")
        batch_size = _positive_int("batch_size", batch_size)
        options = self._call_options(prompt_name, prompt, truncate_dim, normalize_embeddings, truncate)
        checked = False
        if isinstance(texts, (list, tuple)):
            _check_texts(texts)
            checked = True
        # A generator of its own, so that the checks above run at the call, not at first next().
        return self._stream(iter(texts), batch_size, options, checked)

    def tokenize(
        self,
        texts: str | Sequence[str],
        prompt_name: str | None = None,
        prompt: str | None = None,
        truncate: Truncate = True,
    ) -> list[list[int]]:
        """The token ids each text goes into the model as: ``<bos>``, prompt, text, ``<eos>``,
        after truncation to ``max_seq_length`` (``truncate="left"`` cuts the prompt's tokens
        first, as ``encode`` does)."""
        batch = _texts([texts] if isinstance(texts, str) else texts)
        options = self._call_options(prompt_name, prompt, None, False, truncate)
        return self._here().tokenize(
            batch, prompt_name=options["prompt_name"], prompt=options["prompt"], truncation=options["truncation"]
        )

    @staticmethod
    def similarity(a: object, b: object) -> np.ndarray:
        """Cosine similarity of every vector of ``a`` with every vector of ``b``: the model's
        similarity function, as sentence-transformers' ``model.similarity``. Each argument is one
        vector (1-D) or a matrix of vectors (2-D); the result is ``(len(a), len(b))`` float32, a
        1-D argument counting as one row. A zero vector has similarity 0 with everything, and
        vectors of different lengths (say 768 and a 256-dimension prefix) are a ValueError."""
        x, y = _matrix("a", a), _matrix("b", b)
        if x.shape[1] != y.shape[1]:
            raise ValueError(f"a has vectors of length {x.shape[1]} and b of length {y.shape[1]}")

        def unit(m: np.ndarray) -> np.ndarray:
            # sentence-transformers' normalisation: an epsilon keeps a zero vector at zero.
            # Scaled by the largest magnitude first, so that no square overflows or vanishes.
            big = np.max(np.abs(m), axis=1, keepdims=True)
            m = m / np.where(big > 0, big, 1.0)
            n = np.linalg.norm(m, axis=1, keepdims=True)
            return m / np.maximum(n, 1e-12)

        return (unit(x) @ unit(y).T).astype(np.float32)

    # --- helpers -----------------------------------------------------------------------------

    def _encode(
        self,
        sentences: str | Iterable[str],
        prompt_name: str | None,
        prompt: str | None,
        batch_size: int,
        show_progress_bar: bool | None,
        convert_to_numpy: bool,
        normalize_embeddings: bool,
        truncate_dim: int | None,
        truncate: Truncate,
    ) -> np.ndarray:
        """``encode``'s body. ``encode``, ``encode_query`` and ``encode_document`` call it
        directly, so a ``TruncationWarning`` is always the same number of frames from the caller."""
        if not convert_to_numpy:
            raise ValueError("only NumPy output is supported (convert_to_numpy=True)")
        single = isinstance(sentences, str)
        texts = _texts([sentences] if single else sentences)
        batch_size = _positive_int("batch_size", batch_size)
        options = self._call_options(prompt_name, prompt, truncate_dim, normalize_embeddings, truncate)
        dims = options["dims"] or self.dim
        progress = _Progress(len(texts), bool(show_progress_bar))
        truncated: list[int] = []
        try:
            if len(texts) <= batch_size:
                # One runtime call: the array NumPy gets owns the runtime's buffer (no copy).
                out, _, cut = self._here().embed(texts, **options)
                truncated.extend(i for i, c in enumerate(cut) if c)
                progress.update(len(texts))
            else:
                out = np.empty((len(texts), dims), dtype=np.float32)
                for start in range(0, len(texts), batch_size):
                    batch = texts[start : start + batch_size]
                    try:
                        part, _, cut = self._here().embed(batch, **options)
                    except _native.TextError as e:
                        raise _in_call(e, start) from None
                    out[start : start + len(batch)] = part
                    truncated.extend(start + i for i, c in enumerate(cut) if c)
                    progress.update(len(batch))
        finally:
            progress.close()
        if truncated:
            # warn <- _warn_truncated <- _encode <- encode (or encode_query ...) <- the caller
            self._warn_truncated(truncated, len(texts), stacklevel=4)
        return out[0] if single else out

    def _stream(self, it: Iterator[str], batch_size: int, options: _Options, checked: bool) -> Iterator[np.ndarray]:
        """``embed``'s generator: ``checked`` when the whole input was checked at the call."""
        seen = 0
        while batch := list(itertools.islice(it, batch_size)):
            if not checked:
                _check_texts(batch, seen)
            try:
                out, _, cut = self._here().embed(batch, **options)
            except _native.TextError as e:
                raise _in_call(e, seen) from None
            if any(cut):
                # warn <- _warn_truncated <- this generator <- the caller's next()
                self._warn_truncated([seen + i for i, c in enumerate(cut) if c], None, stacklevel=3)
            seen += len(batch)
            yield from out

    def _call_options(
        self,
        prompt_name: str | None,
        prompt: str | None,
        truncate_dim: int | None,
        normalize: bool,
        truncate: Truncate,
    ) -> _Options:
        if truncate_dim is not None:
            truncate_dim = _matryoshka_dim("truncate_dim", truncate_dim)
        # The runtime checks the prompt too, but only at the first batch; `embed` is lazy, so
        # these are checked here, at the call, with the runtime's wording.
        if prompt_name is not None:
            _prompt_name(prompt_name)
            if prompt is not None:
                raise ValueError("give prompt_name or prompt, not both")
        if prompt is not None:
            if not isinstance(prompt, str):
                raise TypeError(f"prompt must be a str, not {type(prompt).__name__}")
            _check_utf8("prompt", prompt)
        return {
            "prompt_name": prompt_name,
            "prompt": prompt,
            "dims": truncate_dim,
            "normalize": bool(normalize),
            "truncation": _truncation(truncate),
        }

    def _warn_truncated(self, indices: list[int], total: int | None, stacklevel: int) -> None:
        shown = ", ".join(map(str, indices[:10])) + (", ..." if len(indices) > 10 else "")
        of = f" of {total}" if total is not None else ""
        warnings.warn(
            TruncationWarning(
                f"{len(indices)} text(s){of} longer than the model's context of {self.max_seq_length} tokens "
                f"were truncated (indices {shown}); pass truncate=False to raise instead"
            ),
            stacklevel=stacklevel,
        )


def _matrix(name: str, value: object) -> np.ndarray:
    """``value`` as a 2-D float64 array of vectors (a 1-D vector becomes one row)."""
    try:
        m = np.asarray(value)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be a vector or a matrix of vectors: {e}") from None
    # Numbers only: strings of digits and complex values are refused, not converted.
    if m.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, not {m.dtype}")
    m = m.astype(np.float64)
    if not np.all(np.isfinite(m)):
        raise ValueError(f"{name} holds a value that is not finite")
    if m.ndim not in (1, 2) or m.shape[-1] == 0:
        # The shape as given: a 1-D argument is made a row only once it is a valid vector.
        raise ValueError(f"{name} must be a non-empty vector or a matrix of vectors, not shape {m.shape}")
    return m[np.newaxis, :] if m.ndim == 1 else m


def _rebuild(
    cls: type[Embedder], model: str | None, threads: int | None, parallelism: Literal["auto", "coarse", "fine"]
) -> Embedder:
    """Unpickles an `Embedder` (see `Embedder.__reduce__`)."""
    return cls(model, threads=threads, parallelism=parallelism)


# Native embedders a forked child inherited and replaced (see `Embedder._here`).
_INHERITED: list[_native.NativeEmbedder] = []
