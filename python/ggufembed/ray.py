"""Ray Data batch inference: embed a dataset's text column on a pool of actors.

Each actor loads the model once (from a path, never a pickled object: the GGUF is
memory-mapped, so actors on one node share its file pages) and runs its own worker pool with as
many threads as the CPUs Ray gave it. Ray's ``OMP_NUM_THREADS`` does not bound a Rust pool, so
the thread count is passed explicitly.

>>> import ray, ggufembed.ray
>>> ds = ray.data.read_parquet("passages/")
>>> out = ggufembed.ray.embed_dataset(ds, text_column="text", actors=4, cpus_per_actor=2,
...                                   prompt_name="document")
>>> out.write_parquet("vectors/")

Needs ``ray[data]`` and ``pyarrow`` (``pip install "ggufembed[ray]"``).
"""

from __future__ import annotations

import os
import re
import warnings
from typing import Any

import numpy as np
import pyarrow as pa

from ggufembed._embedder import Embedder, _matryoshka_dim, _positive_int, _prompt_name
from ggufembed._native import TextError

__all__ = ["EmbedBatch", "embed_dataset", "vector_array"]


def vector_array(matrix: np.ndarray) -> pa.FixedSizeListArray:
    """An ``(n, d)`` float32 matrix as a ``FixedSizeList<float32>[d]`` column, without copying."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    n, d = matrix.shape
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(n * d)), d)


class EmbedBatch:
    """A Ray Data callable class: ``ds.map_batches(EmbedBatch, fn_constructor_kwargs=...,
    compute=ActorPoolStrategy(size=n), num_cpus=k, batch_format="pyarrow")``.

    ``model`` is a GGUF path readable on every node; ``None`` makes each actor use the default
    model of its node's cache (fetched there on first use, under the cache's lock). ``threads``
    should equal the ``num_cpus`` each actor is given.
    """

    def __init__(
        self,
        model: str | None,
        *,
        threads: int,
        text_column: str = "text",
        vector_column: str = "vector",
        prompt_name: str | None = None,
        dims: int | None = None,
        normalize: bool | None = None,
        batch_size: int = 32,
    ) -> None:
        self.embedder = Embedder(model, threads=threads)
        self.text_column = text_column
        self.vector_column = vector_column
        self.options: dict[str, Any] = {
            "prompt_name": prompt_name,
            "truncate_dim": dims,
            # A Matryoshka prefix is renormalised unless asked otherwise, so that cosine and
            # dot-product searches agree on the stored vectors.
            "normalize_embeddings": (dims not in (None, 768)) if normalize is None else normalize,
            "batch_size": batch_size,
        }

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.vector_column in batch.column_names:
            raise ValueError(f"the input already has a column named {self.vector_column!r}")
        texts = batch.column(self.text_column).to_pylist()
        # One bad row must not fail a job of millions (Ray does not retry application errors):
        # a null text, or one the model cannot embed, gets a null vector and a warning.
        bad = {i for i, t in enumerate(texts) if not isinstance(t, str)}
        if bad:
            rows = sorted(bad)
            warnings.warn(
                f"{len(rows)} row(s) of a batch have no text (null or not a str) and get no vector: "
                f"rows {_shown(rows)} ({', '.join(sorted({type(texts[i]).__name__ for i in rows}))})",
                stacklevel=1,
            )
        while True:
            keep = [i for i in range(len(texts)) if i not in bad]
            try:
                vectors = self.embedder.encode([texts[i] for i in keep], **self.options)
                break
            except TextError as e:
                # `e.index` is the first text the model refuses, so the rows before it are fine.
                # Tokenizing the rest (cheap next to embedding) finds any other refused text now,
                # so a batch is embedded at most once more, not once per bad row.
                for row, reason in [(keep[e.index], _reason(e)), *self._refused(texts, keep[e.index + 1 :])]:
                    bad.add(row)
                    # The row number is within Ray's batch; the text's start finds it in the data.
                    warnings.warn(
                        f"row {row} of a batch ({_excerpt(texts[row])}) gets no vector: {reason}", stacklevel=1
                    )
        column = vector_array(vectors)
        if bad:
            column = _with_nulls(column, keep, len(texts))
        return batch.append_column(self.vector_column, column)

    def _refused(self, texts: list[Any], rows: list[int]) -> list[tuple[int, str]]:
        """The rows among ``rows`` whose text the model refuses, each with the reason."""
        found = []
        while rows:
            try:
                self.embedder.tokenize([texts[i] for i in rows], prompt_name=self.options["prompt_name"])
                break
            except TextError as e:
                found.append((rows[e.index], _reason(e)))
                rows = rows[e.index + 1 :]
        return found


def _reason(e: TextError) -> str:
    """``e``'s message without its leading "text N: " (N counts within the call that raised it)."""
    return re.sub(r"^text \d+: ", "", str(e))


def _excerpt(text: str, n: int = 40) -> str:
    """The start of ``text``, quoted, to find a refused row in the data by."""
    return repr(text[:n]) + ("..." if len(text) > n else "")


def _shown(rows: list[int]) -> str:
    return ", ".join(map(str, rows[:10])) + (", ..." if len(rows) > 10 else "")


def _with_nulls(column: pa.FixedSizeListArray, keep: list[int], n: int) -> pa.FixedSizeListArray:
    """``column``'s rows at positions ``keep`` of ``n``, null elsewhere."""
    d = column.type.list_size
    values = np.zeros((n, d), dtype=np.float32)
    values[keep] = column.flatten().to_numpy().reshape(-1, d)
    mask = np.ones(n, dtype=bool)
    mask[keep] = False
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), d, mask=pa.array(mask))


def embed_dataset(
    ds: Any,
    text_column: str = "text",
    *,
    actors: int = 1,
    cpus_per_actor: int = 1,
    prompt_name: str | None = None,
    dims: int | None = None,
    normalize: bool | None = None,
    model: str | os.PathLike[str] | None = None,
    vector_column: str = "vector",
    batch_size: int = 256,
) -> Any:
    """Adds a ``FixedSizeList<float32>`` vector column to every row of the Ray dataset ``ds``,
    computed by ``actors`` actors of ``cpus_per_actor`` CPUs (and as many threads) each.

    Every other column is kept. ``batch_size`` rows go to an actor at a time. Rows come out in
    input order when the dataset context's ``execution_options.preserve_order`` is set (the
    ``ggufembed.corpus`` command sets it).

    The options are checked here, at the call, not when the dataset runs (where a bad one would
    fail every actor under a Ray traceback): ``dims`` and ``prompt_name`` as ``Embedder.encode``
    checks them, and, when Ray knows ``ds``'s schema without reading it, that ``text_column``
    exists and ``vector_column`` does not.
    """
    import ray.data

    actors = _positive_int("actors", actors)
    cpus_per_actor = _positive_int("cpus_per_actor", cpus_per_actor)
    batch_size = _positive_int("batch_size", batch_size)
    if dims is not None:
        dims = _matryoshka_dim("dims", dims)
    if prompt_name is not None:
        _prompt_name(prompt_name)
    schema = ds.schema(fetch_if_missing=False)
    if schema is not None:
        if text_column not in schema.names:
            raise ValueError(f"the dataset has no column {text_column!r} (columns: {schema.names})")
        if vector_column in schema.names:
            raise ValueError(f"the dataset already has a column named {vector_column!r}")
    return ds.map_batches(
        EmbedBatch,
        fn_constructor_kwargs={
            "model": None if model is None else os.fspath(model),
            "threads": cpus_per_actor,
            "text_column": text_column,
            "vector_column": vector_column,
            "prompt_name": prompt_name,
            "dims": dims,
            "normalize": normalize,
        },
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=cpus_per_actor,
    )
