"""Vectors into an embedded LanceDB table, and queries answered with the model's query prompt.

>>> import ggufembed, ggufembed.lancedb as gl
>>> table = gl.create_table("db/", "passages", "vectors/")     # a ggufembed.corpus output folder
>>> hits = gl.search(table, ggufembed.Embedder(), "who plays the flute?", k=5)
>>> hits["text"].to_pylist()

Or from the shell::

    python -m ggufembed.lancedb --db db/ --table passages --from vectors/ --query "who plays the flute?"

Needs ``lancedb`` and ``pyarrow`` (``pip install "ggufembed[lancedb]"``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ggufembed._embedder import Embedder
from ggufembed.corpus import _promoted

__all__ = ["create_table", "search", "corpus_batches"]


def _finished(folder: str | os.PathLike[str]) -> list[Path]:
    files = sorted(p for p in Path(folder).glob("*.parquet") if p.with_name(p.name + ".done").is_file())
    if not files:
        raise FileNotFoundError(f"no finished ggufembed.corpus outputs (NAME.parquet + NAME.parquet.done) in {folder}")
    return files


def corpus_batches(folder: str | os.PathLike[str]) -> Iterator[pa.RecordBatch]:
    """The rows of a ``ggufembed.corpus`` output folder, file by file (only complete files,
    those with a ``.done`` marker), as record batches: memory stays bounded. Each file's batches
    have that file's own schema (see ``create_table`` for one schema over them all)."""
    for f in _finished(folder):
        yield from pq.ParquetFile(f).iter_batches()


def _corpus_schema(files: list[Path]) -> pa.Schema:
    """One schema for the rows of ``files``, whose types may disagree (ggufembed.corpus keeps
    each input's own): every column of any file, in order of first appearance, each of the type
    Arrow promotes the files' types to. Columns with no common type are refused by name."""
    fields: dict[str, tuple[pa.Field, Path]] = {}
    for f in files:
        if pq.ParquetFile(f).metadata.num_rows == 0:
            continue  # an empty input's output has no columns, and no rows to type
        for field in pq.read_schema(f):
            seen = fields.get(field.name)
            if seen is None:
                fields[field.name] = (field.with_nullable(True), f)
            elif seen[0].type != field.type:
                t = _promoted(seen[0].type, field.type)
                if t is None:
                    raise ValueError(
                        f"{f}: column {field.name!r} is {field.type}, but {seen[1]} has it as {seen[0].type}; "
                        "the files of one table need types Arrow can promote to one (numbers and strings "
                        "cannot be; make the inputs agree)"
                    )
                fields[field.name] = (seen[0].with_type(t), seen[1])
    return pa.schema([field for field, _ in fields.values()])


def _conformed(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """``batch`` with ``schema``'s columns, in its order (nulls for a column its file lacks)."""
    if batch.schema == schema:
        return batch
    arrays = [
        batch.column(field.name).cast(field.type) if field.name in batch.schema.names
        else pa.nulls(batch.num_rows, field.type)
        for field in schema
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def create_table(
    db: Any,
    name: str,
    source: str | os.PathLike[str] | pa.Table,
    *,
    mode: str = "overwrite",
) -> Any:
    """Creates (or overwrites) table ``name`` in the LanceDB database ``db`` (a folder, or a
    connection) from a corpus output folder or an Arrow table with a vector column.

    Every row is kept. A row without a vector (the corpus and ``embed_dataset`` give a null,
    missing or unembeddable text a null vector) is stored with a null vector: it counts in
    ``count_rows()``, ``count_rows("vector IS NULL")`` counts these, and a vector search
    (``search``) never returns them. (LanceDB also stores a vector holding a NaN as null.)

    A folder's files may type a column differently (the corpus keeps each input's own types):
    the table has every column of any file, null where a file lacks it, typed as Arrow promotes
    the files' types (an all-null column takes the others' type; int64 and double give double).
    Types with no common one (numbers in one file, strings in another) are refused with a
    ``ValueError`` naming the file and column, before anything is written; so is a folder whose
    finished outputs hold no rows."""
    import lancedb

    conn = lancedb.connect(os.fspath(db)) if isinstance(db, (str, os.PathLike)) else db
    # LanceDB refuses a whole table for one null vector unless told what to do with it;
    # "null" keeps the row (its other columns are data) and the vector search skips it.
    if isinstance(source, pa.Table):
        return conn.create_table(name, data=source, mode=mode, on_bad_vectors="null")
    files = _finished(source)
    schema = _corpus_schema(files)
    if not schema.names:
        raise ValueError(f"the finished ggufembed.corpus outputs in {source} hold no rows ({len(files)} empty file(s))")

    def batches() -> Iterator[pa.RecordBatch]:
        for f in files:
            for b in pq.ParquetFile(f).iter_batches():
                yield _conformed(b, schema)

    reader = pa.RecordBatchReader.from_batches(schema, batches())
    return conn.create_table(name, data=reader, mode=mode, on_bad_vectors="null")


def _dims(table: Any, vector_column: str) -> int:
    field = table.schema.field(vector_column)
    if not pa.types.is_fixed_size_list(field.type):
        raise ValueError(f"column {vector_column!r} is {field.type}, not a fixed-size list")
    return field.type.list_size


def search(
    table: Any,
    embedder: Embedder,
    queries: str | Sequence[str],
    *,
    k: int = 5,
    vector_column: str = "vector",
    exact: bool = True,
) -> pa.Table | list[pa.Table]:
    """The ``k`` nearest rows by cosine for each query, embedded with the model's ``query``
    prompt at the table's dimension (a Matryoshka prefix is renormalised, as
    ``ggufembed.corpus`` stores it). One table per query; a single query gives one table.

    ``exact`` searches every vector (LanceDB's flat search, right for up to a few million rows
    or a table without an index); ``exact=False`` uses the table's vector index if it has one."""
    if isinstance(queries, (bytes, bytearray)):
        # Iterated, bytes would be a sequence of ints, each refused as "text 0 is int".
        raise TypeError("queries must be a str or a sequence of str, not bytes (decode them first)")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, not {k!r}")
    single = isinstance(queries, str)
    dims = _dims(table, vector_column)
    vectors = embedder.encode_query(
        [queries] if isinstance(queries, str) else list(queries),
        truncate_dim=None if dims == embedder.dim else dims,
        normalize_embeddings=dims != embedder.dim,
    )
    results = []
    for v in vectors:
        q = table.search(np.asarray(v), vector_column_name=vector_column).distance_type("cosine").limit(k)
        if exact:
            q = q.bypass_vector_index()
        results.append(q.to_arrow())
    return results[0] if single else results


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ggufembed.lancedb", description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", required=True, help="LanceDB database folder")
    ap.add_argument("--table", required=True)
    ap.add_argument("--from", dest="source", help="a ggufembed.corpus output folder to (re)build the table from")
    ap.add_argument("--query", action="append", default=[], help="a query (repeatable)")
    ap.add_argument("-k", type=int, default=5)
    ap.add_argument("--model", default=None, help="the GGUF the vectors were made with (default model if omitted)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--show", default="text", help="column to print for each hit")
    args = ap.parse_args(argv)
    # Usage errors as argparse reports them, before a table or a model is touched.
    if args.k < 1:
        ap.error("-k must be at least 1")
    if args.threads is not None and args.threads < 1:
        ap.error("--threads must be at least 1")
    import lancedb

    if args.source:
        try:
            table = create_table(args.db, args.table, args.source)
        except (FileNotFoundError, ValueError) as e:  # a folder that cannot make a table, said plainly
            raise SystemExit(f"python -m ggufembed.lancedb: {e}") from None
        missing = table.count_rows("vector IS NULL")
        print(f"{args.table}: {table.count_rows()} rows" + (f", {missing} without a vector (never a hit)" if missing else ""),
              file=sys.stderr)
    else:
        table = lancedb.connect(args.db).open_table(args.table)
    if args.query:
        embedder = Embedder(args.model, threads=args.threads)
        for query, hits in zip(args.query, search(table, embedder, args.query, k=args.k)):
            print(f"query: {query}")
            for rank, (text, dist) in enumerate(zip(hits[args.show].to_pylist(), hits["_distance"].to_pylist()), 1):
                print(f"  {rank}. {1 - dist:.4f}  {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
