"""``python -m ggufembed.corpus``: embed a corpus of Parquet or JSON Lines files on Ray.

    python -m ggufembed.corpus --input passages/ --output vectors/ --actors 4 --cpus-per-actor 2 \\
        [--prompt-name document] [--dims 768] [--text-column text] [--model FILE.gguf]

Each input file ``NAME.parquet`` / ``NAME.jsonl`` becomes ``OUTPUT/NAME.parquet`` with every input
column kept, in input order, plus the vector as a ``FixedSizeList<float32>[dims]`` column
(readable by pyarrow, DuckDB, LanceDB). An output file appears only complete: it is written under
a temporary name, renamed, and then a ``NAME.parquet.done`` marker records the row count and the
options. A rerun into the same output skips every input file whose marker is there, so an
interrupted job resumes where it stopped (a file in progress is redone).

Every input is checked before Ray starts: a text that is not a string (a number in a JSON line,
a Parquet text column of another type) is refused, naming the file and line. A null or missing
text, or one the model cannot embed, gets a null vector and a warning. A JSON Lines column gets
the Arrow type of its JSON values (int64, double, bool, string, list, struct; null where a row
lacks it); one whose values have no common type (numbers and strings) is refused by line.

All pending files go through one Ray Data pipeline (one actor pool, each actor loading the model
once); rows come back in input order, tagged with their file, and this process streams them into
the per-file outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["main", "run"]

FORMATS = {".parquet": "parquet", ".jsonl": "jsonl", ".json": "jsonl"}
PATH_COLUMN = "path"  # what Ray Data's include_paths adds


@dataclass
class Job:
    source: Path
    output: Path
    rows: int
    schema: pa.Schema | None = None  # a JSON Lines file's (see _count_rows); None for Parquet
    as_json: frozenset[str] = frozenset()  # its columns carried through Ray as JSON text (_json_lines)

    @property
    def marker(self) -> Path:
        return self.output.with_name(self.output.name + ".done")


def _inputs(paths: Sequence[str]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.is_file() and f.suffix in FORMATS)
        elif p.is_file():
            if p.suffix not in FORMATS:
                raise SystemExit(f"{p}: not a .parquet, .jsonl or .json file")
            files.append(p)
        else:
            raise SystemExit(f"{p}: no such file or directory")
    if not files:
        raise SystemExit(f"no .parquet or .jsonl files in {list(paths)}")
    return [f.resolve() for f in files]


_JSON_KINDS = {bool: "a boolean", int: "a number", float: "a number", list: "an array", dict: "an object"}


def _count_rows(path: Path, text_column: str) -> tuple[int, pa.Schema | None]:
    """The file's rows, and for a JSON Lines file its Arrow schema. A JSON Lines file is parsed
    whole to count them, and every row's text is checked on the way: a number or an object
    where the text should be is refused here, by line, before anything runs (Ray would take it
    in, and turn that column of every file it batches with into pickled objects). A null or
    missing text is let through (it gets a null vector).

    The schema is the file's own (see ``_json_table``), worked out here once so that every block
    the workers read from the file has exactly these types: a column missing or null in some
    rows stays int64 or bool with nulls, not pandas' float64 (which rounds integers above 2**53)."""
    if FORMATS[path.suffix] == "parquet":
        return pq.ParquetFile(path).metadata.num_rows, None
    rows = 0
    schema = pa.schema([])
    chunk: list[dict[str, object]] = []
    lines: list[int] = []
    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            rows += 1
            try:
                row = json.loads(line)
            except ValueError as e:
                raise SystemExit(f"{path}:{number}: not JSON ({e})") from None
            if not isinstance(row, dict):
                raise SystemExit(f"{path}:{number}: {_JSON_KINDS.get(type(row), 'a value')}, not a JSON object")
            text = row.get(text_column)
            if text is not None and not isinstance(text, str):
                raise SystemExit(
                    f"{path}:{number}: {text_column!r} is {_JSON_KINDS[type(text)]}, not a string "
                    "(write texts as JSON strings)"
                )
            chunk.append(row)
            lines.append(number)
            if len(chunk) == _SCHEMA_CHUNK:
                schema = _merge_schema(path, schema, chunk, lines)
                chunk, lines = [], []
    return rows, _merge_schema(path, schema, chunk, lines)


# Rows typed at a time (by the scan of a JSON Lines file, and per block by the reader).
_SCHEMA_CHUNK = 4096
_JSON_ERRORS = (pa.ArrowException, OverflowError, TypeError, ValueError)


def _json_table(
    rows: list[dict[str, object]], schema: pa.Schema | None = None, as_json: frozenset[str] = frozenset()
) -> pa.Table:
    """Parsed JSON objects as an Arrow table: a column per key, in order of first appearance,
    null where a row lacks the key. Each column takes ``schema``'s type when it has the column,
    else the type Arrow gives its values: JSON's own types (int64, double, bool, string, lists,
    structs), never a date guessed from a string as pandas' and Arrow's JSON readers do. The
    columns named in ``as_json`` hold each value's JSON text instead."""
    names = list(dict.fromkeys(k for row in rows for k in row))
    if schema is not None:
        names = schema.names + [n for n in names if n not in schema.names]
    arrays = [
        pa.array([None if row.get(n) is None else json.dumps(row[n]) for row in rows], type=pa.string())
        if n in as_json else
        pa.array(
            [row.get(n) for row in rows],
            type=schema.field(n).type if schema is not None and n in schema.names else None,
        )
        for n in names
    ]
    return pa.Table.from_arrays(arrays, names=names)


def _typeable(value: object) -> bool:
    try:
        pa.array([value])
    except _JSON_ERRORS:
        return False
    return True


def _promoted(a: pa.DataType, b: pa.DataType) -> pa.DataType | None:
    """The type holding values of types ``a`` and ``b`` as Arrow promotes them (null gives way to
    anything; int64 and double give double, as JSON numbers; string and large_string give
    large_string), or None if there is none (numbers and strings). Vectors of different sizes
    have none either: they would be one list column. Also used by ``ggufembed.lancedb`` to put
    the corpus's outputs, whose types may disagree, in one table."""
    if pa.types.is_fixed_size_list(a) or pa.types.is_fixed_size_list(b):
        same = (pa.types.is_fixed_size_list(a) and pa.types.is_fixed_size_list(b)
                and a.list_size == b.list_size and a.value_type == b.value_type)
        return a if same else None  # the same vectors, whatever the writer named the list's item
    try:
        return pa.unify_schemas([pa.schema([("x", a)]), pa.schema([("x", b)])], promote_options="permissive").field(0).type
    except _JSON_ERRORS:
        return None


def _merge_schema(path: Path, schema: pa.Schema, rows: list[dict[str, object]], lines: list[int]) -> pa.Schema:
    """``schema`` widened to hold ``rows`` (from lines ``lines`` of ``path``); a column whose
    values have no common type is refused, naming the first line that breaks it."""
    try:
        chunk = _json_table(rows).schema
    except _JSON_ERRORS as e:
        if len(rows) == 1:  # one value Arrow cannot type (an array of numbers and strings, ...)
            bad = next((k for k, v in rows[0].items() if not _typeable(v)), "?")
            raise SystemExit(f"{path}:{lines[0]}: column {bad!r}: {e}") from None
        # Some column mixes types within these rows: go row by row to find the line.
        for row, number in zip(rows, lines):
            schema = _merge_schema(path, schema, [row], [number])
        return schema
    fields = {f.name: f for f in schema}
    for f in chunk:
        old = fields.get(f.name)
        if old is None or old.type == f.type:
            fields.setdefault(f.name, f)
            continue
        t = _promoted(old.type, f.type)
        if t is None:
            if len(rows) > 1:  # row by row, to name the line
                for row, number in zip(rows, lines):
                    schema = _merge_schema(path, schema, [row], [number])
            raise SystemExit(
                f"{path}: column {f.name!r} holds {f.type} values (line {lines[0]}) and {old.type} values before; "
                "a column of a JSON Lines file needs one type (numbers, strings, booleans, ...)"
            )
        fields[f.name] = old.with_type(t)
    return pa.schema(list(fields.values()))


def _check_text_type(path: Path, text_column: str) -> None:
    """A Parquet file's text column holds strings (or only nulls); the schema says so."""
    if FORMATS[path.suffix] != "parquet":
        return  # checked row by row in _count_rows
    schema = pq.ParquetFile(path).schema_arrow
    t = schema.field(text_column).type
    if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t) or pa.types.is_null(t)):
        raise SystemExit(f"{path}: column {text_column!r} is {t}, not strings")


def _columns(job: Job) -> list[str]:
    """The file's columns (a JSON Lines file's: every key of any row, see ``_count_rows``)."""
    if job.schema is not None:
        return job.schema.names
    return pq.ParquetFile(job.source).schema_arrow.names


def _options(args: argparse.Namespace) -> dict[str, object]:
    return {
        "prompt_name": args.prompt_name,
        "dims": args.dims,
        "text_column": args.text_column,
        "vector_column": args.vector_column,
        "model": None if args.model is None else str(Path(args.model).resolve()),
    }


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _plain_strings(table: pa.Table) -> pa.Table:
    """The same columns with ``large_string`` as ``string`` (Ray's JSON reader goes through
    pandas, which makes large strings; Parquet input keeps plain ones), so that every output
    of a corpus has one schema. Reader metadata (pandas') is dropped."""
    fields = [
        f.with_type(pa.string()) if pa.types.is_large_string(f.type) else f for f in table.schema
    ]
    return table.cast(pa.schema(fields)).replace_schema_metadata(None)


# Ray Data's type for a column it could not give one Arrow type.
_PICKLED = "ray.data.arrow_pickled_object"


def _own_types(table: pa.Table) -> pa.Table:
    """``table`` (rows of one input file) with each column Ray stored as pickled Python objects
    rebuilt as the Arrow type of its values. Ray unifies the schemas of the blocks it batches
    together; where two files disagree on a column's type (``id`` numbers in one, strings in
    another) it pickles that column for every file, so without this both outputs would hold
    pickles instead of their input's types."""
    for i, field in enumerate(table.schema):
        if getattr(field.type, "extension_name", None) == _PICKLED:
            try:
                column = pa.array(table.column(i).to_pylist())
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                continue  # the file mixes types in this column itself: Ray's objects are its type
            table = table.set_column(i, field.with_type(column.type), column)
    return table


def _conform(table: pa.Table, schema: pa.Schema, as_json: frozenset[str], vector_column: str) -> pa.Table:
    """``table`` (rows of one JSON Lines file, plus the vector column) with exactly the file's
    columns and types, ``schema``, the ``as_json`` columns decoded. Batching blocks of several
    files together, Ray gives a slice the other files' columns too (all null), and a type to a
    column all null in this file."""
    arrays = []
    fields = []
    for name in [*schema.names, vector_column]:
        column = table.column(name)
        field = schema.field(name) if name != vector_column else table.schema.field(name)
        if name in as_json:
            column = pa.array([None if v is None else json.loads(v) for v in column.to_pylist()], type=field.type)
        elif column.type != field.type:
            if getattr(column.type, "extension_name", None) == _PICKLED or pa.types.is_null(field.type):
                column = pa.array(column.to_pylist(), type=field.type)
            else:
                column = column.cast(field.type)
        arrays.append(column)
        fields.append(field)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


class _Writer:
    """Streams one input file's rows into its output, then renames it and leaves the marker."""

    def __init__(self, job: Job, options: dict[str, object]) -> None:
        self.job = job
        self.options = options
        self.tmp = job.output.with_name(f".{job.output.name}.tmp-{os.getpid()}")
        self.writer: pq.ParquetWriter | None = None
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        if self.job.schema is not None:
            table = _conform(table, self.job.schema, self.job.as_json, str(self.options["vector_column"]))
        table = _plain_strings(_own_types(table))
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.tmp, table.schema)
        elif table.schema != self.writer.schema:
            # A slice rebuilt by _own_types can type a column differently from an earlier one
            # (all nulls here, numbers there); the file has one schema, its first slice's.
            table = table.cast(self.writer.schema)
        self.writer.write_table(table)
        self.rows += table.num_rows

    def finish(self) -> None:
        if self.rows != self.job.rows:
            raise RuntimeError(f"{self.job.source}: {self.rows} rows embedded, the file has {self.job.rows}")
        if self.writer is None:
            # An empty input: no rows, but its columns (a Parquet file's schema; a JSON Lines
            # file has no keys without rows) and the vector column, as the other outputs have.
            from ggufembed import _native

            columns = self.job.schema if self.job.schema is not None else pq.read_schema(self.job.source)
            dims = int(self.options["dims"] or _native.MATRYOSHKA_DIMS[0])
            vector = pa.field(str(self.options["vector_column"]), pa.list_(pa.float32(), dims))
            pq.write_table(_plain_strings(pa.schema([*columns, vector]).empty_table()), self.tmp)
        else:
            self.writer.close()
        os.replace(self.tmp, self.job.output)
        marker = {"input": str(self.job.source), "rows": self.rows, "options": self.options,
                  "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        _write_atomically(self.job.marker, (json.dumps(marker, indent=1) + "\n").encode())


def _json_lines_datasource() -> type:
    from ray.data.datasource import FileBasedDatasource

    class JsonLines(FileBasedDatasource):
        """JSON Lines files read as ``_json_table`` types them, each with its own schema (from
        ``_count_rows``), in blocks of up to ``_SCHEMA_CHUNK`` rows."""

        def __init__(self, paths: list[str], jobs: dict[str, Job], **kwargs: object) -> None:
            super().__init__(paths, **kwargs)
            self.schemas = {p: (j.schema, j.as_json) for p, j in jobs.items()}

        def _read_stream(self, f: pa.NativeFile, path: str):  # type: ignore[no-untyped-def]
            schema, as_json = self.schemas[path] if path in self.schemas else self.schemas[str(Path(path).resolve())]
            rows: list[dict[str, object]] = []
            for line in _lines(f):
                if line.strip():
                    rows.append(json.loads(line))
                    if len(rows) == _SCHEMA_CHUNK:
                        yield _json_table(rows, schema, as_json)
                        rows = []
            if rows:
                yield _json_table(rows, schema, as_json)

    return JsonLines


def _json_lines(jobs: list[Job], **kwargs: object) -> object:
    """A Ray datasource of the JSON Lines files of ``jobs`` (the class is made on first use: Ray
    is imported only by ``run``). Ray cannot put blocks whose column types disagree (``id``
    numbers in one file, strings in another) in one batch, so a column that two files type
    differently travels as each value's JSON text, and ``_conform`` decodes it to the file's
    own type."""
    types: dict[str, set[pa.DataType]] = {}
    for j in jobs:
        assert j.schema is not None
        for f in j.schema:
            if not pa.types.is_null(f.type):
                types.setdefault(f.name, set()).add(f.type)
    as_json = frozenset(name for name, ts in types.items() if len(ts) > 1)
    for j in jobs:
        j.as_json = as_json & frozenset(j.schema.names)  # type: ignore[union-attr]
    return _json_lines_datasource()([str(j.source) for j in jobs], {str(j.source): j for j in jobs}, **kwargs)


def _lines(f: pa.NativeFile) -> Iterator[bytes]:
    """The lines of a binary stream (without their newlines)."""
    rest = b""
    while chunk := f.read(1 << 20):
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        yield from lines
    if rest:
        yield rest


class _Progress:
    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.started = time.monotonic()
        self.last = 0.0
        try:
            from tqdm.auto import tqdm
        except ImportError:
            self.bar = None
        else:
            self.bar = tqdm(total=total, desc="Embedding", unit="text")

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif time.monotonic() - self.last > 10 or self.done == self.total:
            self.last = time.monotonic()
            rate = self.done / max(self.last - self.started, 1e-9)
            print(f"{self.done}/{self.total} texts, {rate:.1f} texts/s", file=sys.stderr, flush=True)

    def note(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run(args: argparse.Namespace) -> dict[str, int]:
    """Runs the job described by parsed arguments; returns counts of files done and skipped.

    Uses the Ray cluster this process is connected to, else starts a local one (``--address``
    connects to an existing cluster)."""
    import ray
    import ray.data

    from ggufembed.ray import embed_dataset

    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    options = _options(args)
    jobs: list[Job] = []
    names: dict[str, Path] = {}
    skipped = 0
    for src in _inputs(args.input):
        name = src.stem + ".parquet"
        if name in names:
            raise SystemExit(f"{src} and {names[name]} would both write {name}; rename one")
        names[name] = src
        job = Job(src, out_dir / name, 0)
        if job.marker.is_file() and job.output.is_file():
            done = json.loads(job.marker.read_text())
            if done.get("options") != options:
                raise SystemExit(
                    f"{job.output} was made with other options ({done.get('options')}); use another --output"
                )
            skipped += 1
            continue
        job.rows, job.schema = _count_rows(src, args.text_column)
        jobs.append(job)
    print(f"{len(jobs)} input file(s) to embed, {skipped} already done in {out_dir}", file=sys.stderr, flush=True)
    if not jobs:
        return {"done": 0, "skipped": skipped}

    for job in jobs:
        cols = _columns(job)
        if PATH_COLUMN in cols:
            raise SystemExit(f"{job.source}: a column named {PATH_COLUMN!r} clashes with the file tag Ray Data adds")
        if job.rows and args.text_column not in cols:
            raise SystemExit(f"{job.source}: no column {args.text_column!r} (columns: {cols})")
        if args.vector_column in cols:
            raise SystemExit(f"{job.source}: already has a column named {args.vector_column!r} (use --vector-column)")
        if job.rows:
            _check_text_type(job.source, args.text_column)

    if not ray.is_initialized():
        ray.init(address=args.address, num_cpus=args.num_cpus if args.address is None else None)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    # Ray's V2 Parquet reader lists files in a task that asks for a whole CPU, which never runs
    # while the actors hold every CPU of the cluster (2 actors x 1 CPU on 2 CPUs); the V1 reader
    # honours the num_cpus=0 below.
    ctx.use_datasource_v2 = False

    progress = _Progress(sum(j.rows for j in jobs))
    by_path = {str(j.source): j for j in jobs}
    finished: set[str] = set()
    current: _Writer | None = None
    try:
        for fmt in ("parquet", "jsonl"):
            group = [j for j in jobs if FORMATS[j.source.suffix] == fmt]
            if not group:
                continue
            paths = [str(j.source) for j in group]
            # Reading is light next to embedding; CPUs go to the actors (a read task asking for
            # one could wait forever behind actors holding every CPU of a small cluster).
            if fmt == "parquet":
                ds = ray.data.read_parquet(paths, include_paths=True, num_cpus=0)
            else:
                # Not ray.data.read_json: its JSON Lines reader goes through pandas, which makes an
                # int or bool column with a missing value float64 (rounding integers above 2**53),
                # and Arrow's JSON reader turns date-like strings into timestamps.
                ds = ray.data.read_datasource(_json_lines(group, include_paths=True), num_cpus=0)
            out = embed_dataset(
                ds, args.text_column, actors=args.actors, cpus_per_actor=args.cpus_per_actor,
                prompt_name=args.prompt_name, dims=args.dims, model=args.model,
                vector_column=args.vector_column, batch_size=args.batch_size,
            )
            for batch in out.iter_batches(batch_format="pyarrow", batch_size=None):
                tags = batch.column(PATH_COLUMN).to_pylist()
                batch = batch.drop_columns([PATH_COLUMN])
                start = 0
                while start < len(tags):
                    end = start
                    while end < len(tags) and tags[end] == tags[start]:
                        end += 1
                    tag = str(Path(tags[start]).resolve())
                    if current is None or str(current.job.source) != tag:
                        if current is not None:
                            current.finish()
                            finished.add(str(current.job.source))
                            progress.note(f"done: {current.job.output} ({current.rows} rows)")
                        if tag in finished or tag not in by_path:
                            raise RuntimeError(f"rows of {tag} arrived out of order")
                        current = _Writer(by_path[tag], options)
                    current.write(batch.slice(start, end - start))
                    progress.update(end - start)
                    start = end
        if current is not None:
            current.finish()
            finished.add(str(current.job.source))
            progress.note(f"done: {current.job.output} ({current.rows} rows)")
            current = None
        for job in jobs:  # files with no rows never show up in the stream
            if str(job.source) not in finished:
                _Writer(job, options).finish()
    finally:
        progress.close()
        if current is not None and current.writer is not None:
            current.writer.close()
            current.tmp.unlink(missing_ok=True)
    return {"done": len(jobs), "skipped": skipped}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m ggufembed.corpus",
        description="Embed Parquet or JSON Lines files on Ray into Parquet with a vector column; "
        "a rerun skips the files already done.",
    )
    ap.add_argument("--input", nargs="+", required=True, help="files or folders of .parquet / .jsonl")
    ap.add_argument("--output", required=True, help="folder for NAME.parquet outputs and .done markers")
    ap.add_argument("--actors", type=int, default=1, help="model replicas (Ray actors)")
    ap.add_argument("--cpus-per-actor", type=int, default=1, help="CPUs, and worker threads, of each actor")
    ap.add_argument("--prompt-name", default=None, help="one of the model's prompts, e.g. document or query")
    ap.add_argument("--dims", type=int, default=None, help="768, or a Matryoshka prefix of 512, 256 or 128 (renormalised)")
    ap.add_argument("--text-column", default="text")
    ap.add_argument("--vector-column", default="vector")
    ap.add_argument("--model", default=None, help="a GGUF readable on every node (default: each node's cached default model)")
    ap.add_argument("--batch-size", type=int, default=256, help="rows handed to an actor at a time")
    ap.add_argument("--address", default=None, help="a Ray cluster to join (default: start a local one)")
    ap.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local cluster (default: all)")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    from ggufembed import _native

    args = parser().parse_args(argv)
    # Checked before Ray starts (an actor would only fail at its first batch, under a Ray
    # traceback), against the lists the runtime itself checks.
    if args.dims is not None and args.dims not in _native.MATRYOSHKA_DIMS:
        parser().error(f"--dims must be one of {', '.join(map(str, _native.MATRYOSHKA_DIMS))}")
    prompts = [name for name, _ in _native.NAMED_PROMPTS]
    if args.prompt_name is not None and args.prompt_name not in prompts:
        parser().error(f"--prompt-name must be one of {', '.join(prompts)}")
    if args.actors < 1 or args.cpus_per_actor < 1:
        parser().error("--actors and --cpus-per-actor must be at least 1")
    result = run(args)
    print(f"{result['done']} file(s) embedded, {result['skipped']} skipped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
