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
text, or one the model cannot embed, gets a null vector and a warning.

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
from collections.abc import Sequence
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


def _count_rows(path: Path, text_column: str) -> int:
    """The file's rows. A JSON Lines file is parsed whole to count them, and every row's text is
    checked on the way: a number or an object where the text should be is refused here, by line,
    before anything runs (Ray would take it in, and turn that column of every file it batches
    with into pickled objects). A null or missing text is let through (it gets a null vector)."""
    if FORMATS[path.suffix] == "parquet":
        return pq.ParquetFile(path).metadata.num_rows
    rows = 0
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
    return rows


def _check_text_type(path: Path, text_column: str) -> None:
    """A Parquet file's text column holds strings (or only nulls); the schema says so."""
    if FORMATS[path.suffix] != "parquet":
        return  # checked row by row in _count_rows
    schema = pq.ParquetFile(path).schema_arrow
    t = schema.field(text_column).type
    if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t) or pa.types.is_null(t)):
        raise SystemExit(f"{path}: column {text_column!r} is {t}, not strings")


def _columns(path: Path) -> list[str]:
    if FORMATS[path.suffix] == "parquet":
        return pq.ParquetFile(path).schema_arrow.names
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                return list(json.loads(line))
    return []


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


class _Writer:
    """Streams one input file's rows into its output, then renames it and leaves the marker."""

    def __init__(self, job: Job, options: dict[str, object]) -> None:
        self.job = job
        self.options = options
        self.tmp = job.output.with_name(f".{job.output.name}.tmp-{os.getpid()}")
        self.writer: pq.ParquetWriter | None = None
        self.rows = 0

    def write(self, table: pa.Table) -> None:
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
        if self.writer is None:  # an empty input file: an empty output with no columns to guess
            pq.write_table(pa.table({}), self.tmp)
        else:
            self.writer.close()
        os.replace(self.tmp, self.job.output)
        marker = {"input": str(self.job.source), "rows": self.rows, "options": self.options,
                  "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        _write_atomically(self.job.marker, (json.dumps(marker, indent=1) + "\n").encode())


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
        job.rows = _count_rows(src, args.text_column)
        jobs.append(job)
    print(f"{len(jobs)} input file(s) to embed, {skipped} already done in {out_dir}", file=sys.stderr, flush=True)
    if not jobs:
        return {"done": 0, "skipped": skipped}

    for job in jobs:
        cols = _columns(job.source)
        if PATH_COLUMN in cols:
            raise SystemExit(f"{job.source}: a column named {PATH_COLUMN!r} clashes with the file tag Ray Data adds")
        if job.rows and args.text_column not in cols:
            raise SystemExit(f"{job.source}: no column {args.text_column!r} (columns: {cols})")
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
                ds = ray.data.read_json(paths, lines=True, include_paths=True, num_cpus=0)
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
    args = parser().parse_args(argv)
    if args.dims is not None and args.dims not in (768, 512, 256, 128):
        parser().error("--dims must be 768, 512, 256 or 128")
    if args.actors < 1 or args.cpus_per_actor < 1:
        parser().error("--actors and --cpus-per-actor must be at least 1")
    result = run(args)
    print(f"{result['done']} file(s) embedded, {result['skipped']} skipped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
