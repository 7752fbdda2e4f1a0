"""Corpus scale on a real local Ray cluster: `python -m ggufembed.corpus` (2 actors x 1 thread)
over STS-B texts in Parquet and JSON Lines, then LanceDB over its output."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import ggufembed
from ggufembed import corpus

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Ray starts workers at nice 15; on a machine that is also compiling, that starves the actors.
os.environ.setdefault("RAY_worker_niceness", "0")
import ray  # noqa: E402

N_TEXTS = 2100
FILES = [("part-0.parquet", 0, 700), ("part-1.parquet", 700, 1400), ("part-2.jsonl", 1400, 2100)]


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def texts(reference_dir) -> list[str]:
    """2,100 distinct STS-B dev sentences (distinct, so nearest-neighbour ranks have no exact ties)."""
    seen: dict[str, None] = {}
    for line in (reference_dir / "tokens-dev-en.jsonl").read_text(encoding="utf-8").splitlines():
        seen.setdefault(json.loads(line)["text"], None)
    out = list(seen)
    assert len(out) >= N_TEXTS + 20, len(out)
    return out


@pytest.fixture(scope="module")
def corpus_input(tmp_path_factory, texts):
    d = tmp_path_factory.mktemp("corpus-in")
    for name, lo, hi in FILES:
        rows = {"id": list(range(lo, hi)), "text": texts[lo:hi], "lang": ["en"] * (hi - lo),
                "score": [i / 7 for i in range(lo, hi)]}
        if name.endswith(".parquet"):
            pq.write_table(pa.table(rows), d / name, row_group_size=128)
        else:
            with open(d / name, "w", encoding="utf-8") as f:
                for i in range(hi - lo):
                    f.write(json.dumps({k: v[i] for k, v in rows.items()}) + "\n")
    return d


def _args(inp, out, model_path):
    return corpus.parser().parse_args([
        "--input", str(inp), "--output", str(out), "--actors", "2", "--cpus-per-actor", "1",
        "--prompt-name", "document", "--model", str(model_path), "--batch-size", "100",
    ])


@pytest.fixture(scope="module")
def corpus_output(cluster, corpus_input, tmp_path_factory, model_path):
    out = tmp_path_factory.mktemp("corpus-out")
    result = corpus.run(_args(corpus_input, out, model_path))
    assert result == {"done": 3, "skipped": 0}
    return out


def test_every_row_kept_in_order_with_bit_identical_vectors(corpus_output, texts, model_path):
    single = ggufembed.Embedder(model_path, threads=2).encode_document(texts[:N_TEXTS], batch_size=64)
    for name, lo, hi in FILES:
        out = corpus_output / (name.rsplit(".", 1)[0] + ".parquet")
        marker = json.loads((out.parent / (out.name + ".done")).read_text())
        assert marker["rows"] == hi - lo
        t = pq.read_table(out)
        assert t.column_names == ["id", "text", "lang", "score", "vector"]
        assert t.schema.field("vector").type == pa.list_(pa.float32(), 768)
        assert t.column("id").to_pylist() == list(range(lo, hi)), f"{name}: ids in input order, none lost or repeated"
        assert t.column("text").to_pylist() == texts[lo:hi]
        assert t.column("lang").to_pylist() == ["en"] * (hi - lo)
        assert np.allclose(t.column("score").to_numpy(), [i / 7 for i in range(lo, hi)])
        vectors = t.column("vector").combine_chunks().flatten().to_numpy().reshape(-1, 768)
        assert np.array_equal(vectors, single[lo:hi]), f"{name}: vectors bit-identical to one process"


def test_a_rerun_skips_finished_files(corpus_output, corpus_input, model_path):
    outs = sorted(corpus_output.glob("*.parquet"))
    before = {p.name: p.stat().st_mtime_ns for p in outs}
    assert corpus.run(_args(corpus_input, corpus_output, model_path)) == {"done": 0, "skipped": 3}
    assert {p.name: p.stat().st_mtime_ns for p in outs} == before
    # An interrupted file (no marker) is redone, alone.
    (corpus_output / "part-1.parquet.done").unlink()
    assert corpus.run(_args(corpus_input, corpus_output, model_path)) == {"done": 1, "skipped": 2}
    after = {p.name: p.stat().st_mtime_ns for p in outs}
    assert after["part-0.parquet"] == before["part-0.parquet"]
    assert after["part-2.parquet"] == before["part-2.parquet"]
    assert after["part-1.parquet"] != before["part-1.parquet"]
    assert pq.read_table(corpus_output / "part-1.parquet").column("id").to_pylist() == list(range(700, 1400))
    # Other options into the same output are refused rather than mixed.
    other = corpus.parser().parse_args(["--input", str(corpus_input), "--output", str(corpus_output), "--dims", "256"])
    with pytest.raises(SystemExit, match="other options"):
        corpus.run(other)


def test_lancedb_top5_equals_brute_force(corpus_output, texts, embedder, tmp_path):
    import ggufembed.lancedb as gl

    table = gl.create_table(tmp_path / "db", "passages", corpus_output)
    assert table.count_rows() == N_TEXTS
    data = pa.concat_tables(pq.read_table(p) for p in sorted(corpus_output.glob("*.parquet")))
    ids = np.asarray(data.column("id").to_pylist())
    matrix = data.column("vector").combine_chunks().flatten().to_numpy().reshape(-1, 768)
    queries = texts[N_TEXTS : N_TEXTS + 20]
    q = embedder.encode_query(queries)
    hits = gl.search(table, embedder, queries, k=5)
    assert len(hits) == 20
    for i, h in enumerate(hits):
        want = ids[np.argsort(-(matrix @ q[i]), kind="stable")[:5]].tolist()
        assert h.column("id").to_pylist() == want, f"query {i}: {queries[i]!r}"


def test_the_command_line(cluster, corpus_input, tmp_path, model_path):
    """`python -m ggufembed.corpus` itself, on one small file, joining the test's cluster."""
    inp = tmp_path / "in"
    inp.mkdir()
    t = pq.read_table(corpus_input / "part-0.parquet").slice(0, 40)
    pq.write_table(t, inp / "few.parquet")
    cmd = [sys.executable, "-m", "ggufembed.corpus", "--input", str(inp), "--output", str(tmp_path / "out"),
           "--actors", "1", "--cpus-per-actor", "1", "--dims", "256", "--model", str(model_path),
           "--address", ray.get_runtime_context().gcs_address]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "1 file(s) embedded, 0 skipped" in run.stderr
    out = pq.read_table(tmp_path / "out" / "few.parquet")
    assert out.schema.field("vector").type == pa.list_(pa.float32(), 256)
    v = out.column("vector").combine_chunks().flatten().to_numpy().reshape(-1, 256)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5), "a Matryoshka prefix is stored renormalised"
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0 and "0 file(s) embedded, 1 skipped" in again.stderr


def test_a_bad_row_gets_a_null_vector_not_a_failed_job(model_path, embedder):
    from ggufembed.ray import EmbedBatch

    fn = EmbedBatch(str(model_path), threads=1, prompt_name="document")
    batch = pa.table({"id": [0, 1, 2, 3], "text": ["fine", "an image: <image_soft_token>", None, "also fine"]})
    # The row within Ray's batch, and the text's start to find it by in the data.
    with pytest.warns(UserWarning, match=r"row 1 of a batch \('an image: <image_soft_token>'\) gets no vector"):
        out = fn(batch)
    v = out.column("vector")
    assert v.null_count == 2 and v[0].is_valid and v[3].is_valid
    assert v[1].as_py() is None and v[2].as_py() is None
    want = embedder.encode_document(["fine", "also fine"])
    assert np.array_equal(np.asarray(v[0].as_py(), dtype=np.float32), want[0])
    assert np.array_equal(np.asarray(v[3].as_py(), dtype=np.float32), want[1])


def test_exactly_the_bad_rows_get_null_vectors_and_the_batch_is_embedded_at_most_twice(model_path, embedder):
    from ggufembed.ray import EmbedBatch

    fn = EmbedBatch(str(model_path), threads=2, batch_size=8)
    texts = [f"sentence number {i}" for i in range(50)]
    for bad in (40, 45):
        texts[bad] = "look: <image_soft_token>"
    embedded = []
    encode = fn.embedder.encode

    def counting_encode(batch, **kwargs):
        embedded.append(len(batch))
        return encode(batch, **kwargs)

    fn.embedder.encode = counting_encode
    with pytest.warns(UserWarning, match=r"row 40 of a batch \('look: <image_soft_token>'\) gets no vector"):
        out = fn(pa.table({"text": texts}))
    v = out.column("vector")
    assert [i for i in range(50) if v[i].as_py() is None] == [40, 45]
    assert len(embedded) == 2 and embedded[-1] == 48, embedded
    want = embedder.encode([t for i, t in enumerate(texts) if i not in (40, 45)])
    got = np.asarray([v[i].as_py() for i in range(50) if i not in (40, 45)], dtype=np.float32)
    assert np.array_equal(got, want)


def test_rows_without_a_str_text_are_warned_about(model_path):
    from ggufembed.ray import EmbedBatch

    fn = EmbedBatch(str(model_path), threads=1)
    with pytest.warns(UserWarning, match=r"3 row\(s\) of a batch have no text .*: rows 0, 1, 2 \(NoneType, int\)"):
        out = fn(pa.table({"text": [1, None, 2]}))
    assert out.column("vector").null_count == 3
    with pytest.warns(UserWarning, match=r"1 row\(s\) of a batch have no text .*: rows 1 \(NoneType\)"):
        out = fn(pa.table({"text": ["fine", None]}))
    assert out.column("vector").null_count == 1 and out.column("vector")[0].is_valid


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_a_text_that_is_not_a_string_is_refused_before_anything_runs(tmp_path, model_path):
    inp = tmp_path / "in"
    inp.mkdir()
    _write_jsonl(inp / "a.jsonl", [{"id": i, "text": f"text {i}"} for i in range(5)])
    _write_jsonl(inp / "nums.jsonl", [{"id": 0, "text": "fine"}, {"id": 1, "text": 7}])
    with pytest.raises(SystemExit, match=r"nums.jsonl:2: 'text' is a number, not a string"):
        corpus.run(_args(inp, tmp_path / "out", model_path))
    (inp / "nums.jsonl").unlink()
    pq.write_table(pa.table({"id": [0], "text": [3]}), inp / "ints.parquet")
    with pytest.raises(SystemExit, match=r"ints.parquet: column 'text' is int64, not strings"):
        corpus.run(_args(inp, tmp_path / "out", model_path))
    assert not list((tmp_path / "out").glob("*.parquet")), "nothing was written"


def test_each_output_keeps_its_own_input_column_types(cluster, tmp_path, model_path):
    inp = tmp_path / "in"
    inp.mkdir()
    # Two files that disagree on the type of `id`: Ray Data batches them together as pickles.
    _write_jsonl(inp / "a.jsonl", [{"id": i, "text": f"numbered text {i}"} for i in range(5)])
    _write_jsonl(inp / "b.jsonl", [{"id": f"b-{i}", "text": f"named text {i}"} for i in range(4)])
    out = tmp_path / "out"
    assert corpus.run(_args(inp, out, model_path)) == {"done": 2, "skipped": 0}
    a, b = pq.read_table(out / "a.parquet"), pq.read_table(out / "b.parquet")
    assert a.schema.field("id").type == pa.int64() and a.column("id").to_pylist() == list(range(5))
    assert a.schema.field("text").type == pa.string()
    assert a.column("text").to_pylist() == [f"numbered text {i}" for i in range(5)]
    assert b.schema.field("id").type == pa.string() and b.column("id").to_pylist() == [f"b-{i}" for i in range(4)]
    assert b.schema.field("text").type == pa.string()
    assert a.column("vector").null_count == 0 and b.column("vector").null_count == 0


def test_an_empty_input_gives_an_empty_output_with_its_columns_and_the_vector(cluster, tmp_path, model_path):
    inp = tmp_path / "in"
    inp.mkdir()
    pq.write_table(pa.table({"id": pa.array([], pa.int64()), "text": pa.array([], pa.string())}), inp / "e.parquet")
    pq.write_table(pa.table({"id": [1], "text": ["one text"]}), inp / "f.parquet")
    out = tmp_path / "out"
    assert corpus.run(_args(inp, out, model_path)) == {"done": 2, "skipped": 0}
    empty, full = pq.read_table(out / "e.parquet"), pq.read_table(out / "f.parquet")
    assert empty.num_rows == 0
    assert empty.schema.names == ["id", "text", "vector"]
    assert empty.schema.field("vector").type == full.schema.field("vector").type == pa.list_(pa.float32(), 768)
    assert empty.schema.field("id").type == pa.int64()


def test_jsonl_columns_keep_their_types_and_a_first_row_may_lack_the_text(cluster, tmp_path, model_path):
    inp = tmp_path / "in"
    inp.mkdir()
    # An int or bool missing from a row stays int64 or bool with a null (pandas would make it
    # float64, rounding 2**53 + 1); a date-like string stays a string.
    _write_jsonl(inp / "types.jsonl", [
        {"ext_id": 2**53 + 1, "flag": True, "when": "2024-01-01T10:00:00+02:00", "text": "first"},
        {"text": "second", "score": 1},
        {"ext_id": -5, "flag": False, "text": "third", "score": 0.5},
    ])
    # The first row has no text at all: it gets a null vector, as a later row without one does.
    _write_jsonl(inp / "late.jsonl", [{"id": 1}, {"id": 2, "text": "hello"}])
    out = tmp_path / "out"
    assert corpus.run(_args(inp, out, model_path)) == {"done": 2, "skipped": 0}
    t = pq.read_table(out / "types.parquet")
    assert t.column_names == ["ext_id", "flag", "when", "text", "score", "vector"]
    assert t.schema.field("ext_id").type == pa.int64()
    assert t.column("ext_id").to_pylist() == [2**53 + 1, None, -5]
    assert t.schema.field("flag").type == pa.bool_() and t.column("flag").to_pylist() == [True, None, False]
    assert t.schema.field("when").type == pa.string()
    assert t.column("when").to_pylist() == ["2024-01-01T10:00:00+02:00", None, None]
    assert t.schema.field("score").type == pa.float64() and t.column("score").to_pylist() == [None, 1.0, 0.5]
    assert t.column("vector").null_count == 0
    late = pq.read_table(out / "late.parquet")
    assert late.column_names == ["id", "text", "vector"]
    assert late.column("id").to_pylist() == [1, 2] and late.column("text").to_pylist() == [None, "hello"]
    assert late.column("vector")[0].as_py() is None and late.column("vector")[1].is_valid


def test_a_jsonl_column_mixing_types_is_refused_by_line(tmp_path, model_path):
    inp = tmp_path / "in"
    inp.mkdir()
    _write_jsonl(inp / "mixed.jsonl", [{"id": i, "text": "t"} for i in range(5000)] + [{"id": "x", "text": "t"}])
    with pytest.raises(SystemExit, match=r"mixed.jsonl: column 'id' holds string values \(line 5001\) and int64"):
        corpus.run(_args(inp, tmp_path / "out", model_path))


def test_options_are_checked_before_ray_starts(tmp_path, model_path, capsys):
    inp = tmp_path / "in"
    inp.mkdir()
    _write_jsonl(inp / "a.jsonl", [{"text": "a", "vector": [1, 2]}])
    for flag, value in (("--prompt-name", "nope"), ("--dims", "300")):
        with pytest.raises(SystemExit) as e:
            corpus.main(["--input", str(inp), "--output", str(tmp_path / "out"), flag, value])
        assert e.value.code == 2 and f"{flag} must be one of" in capsys.readouterr().err
    with pytest.raises(SystemExit, match=r"a.jsonl: already has a column named 'vector'"):
        corpus.run(_args(inp, tmp_path / "out", model_path))


def test_embed_dataset_checks_its_options_at_the_call(cluster):
    import ray.data

    from ggufembed.ray import embed_dataset

    ds = ray.data.from_items([{"text": "a", "vector": 1}])
    with pytest.raises(ValueError, match="truncate_dim|dims 300 is not one of"):
        embed_dataset(ds.drop_columns(["vector"]), dims=300)
    with pytest.raises(ValueError, match="unknown prompt_name 'nope'"):
        embed_dataset(ds.drop_columns(["vector"]), prompt_name="nope")
    with pytest.raises(ValueError, match="no column 'body'"):
        embed_dataset(ds.drop_columns(["vector"]), "body")
    with pytest.raises(ValueError, match="already has a column named 'vector'"):
        embed_dataset(ds)
    with pytest.raises(ValueError, match="actors must be at least 1"):
        embed_dataset(ds.drop_columns(["vector"]), actors=0)


def _corpus_folder(folder, tables):
    """A folder as ggufembed.corpus leaves it: NAME.parquet and its NAME.parquet.done marker."""
    folder.mkdir()
    for name, table in tables.items():
        pq.write_table(table, folder / name)
        (folder / (name + ".done")).write_text(json.dumps({"rows": table.num_rows}))
    return folder


def test_lancedb_keeps_a_row_without_a_vector_and_never_returns_it(embedder, tmp_path):
    import ggufembed.lancedb as gl
    from ggufembed.ray import _with_nulls, vector_array

    texts = ["the flute player", "a cat on a mat", None, "stock prices fell"]
    column = _with_nulls(vector_array(embedder.encode_document([t for t in texts if t])), [0, 1, 3], 4)
    data = pa.table({"id": [0, 1, 2, 3], "text": texts, "vector": column})
    for source in (data, _corpus_folder(tmp_path / "vectors", {"a.parquet": data.slice(0, 2), "b.parquet": data.slice(2)})):
        table = gl.create_table(tmp_path / "db", "passages", source)
        assert table.count_rows() == 4, "the row without a vector is kept"
        assert table.count_rows("vector IS NULL") == 1
        for exact in (True, False):
            hits = gl.search(table, embedder, "who plays the flute?", k=10, exact=exact)
            assert sorted(hits.column("id").to_pylist()) == [0, 1, 3], "never the row without a vector"
            assert hits.column("id")[0].as_py() == 0


def test_lancedb_unifies_the_files_types_or_names_the_clash(embedder, tmp_path):
    import ggufembed.lancedb as gl
    from ggufembed.ray import vector_array

    v = vector_array(embedder.encode_document(["alpha", "beta", "gamma"]))
    folder = _corpus_folder(tmp_path / "ok", {
        "a.parquet": pa.table({"id": [1], "text": ["alpha"], "vector": v.slice(0, 1)}),
        # `id` all null (Arrow type null), and a column the other files lack.
        "b.parquet": pa.table({"id": pa.nulls(1), "text": ["beta"], "lang": ["en"], "vector": v.slice(1, 1)}),
        "c.parquet": pa.table({"text": ["gamma"], "id": [2**53 + 1], "vector": v.slice(2, 1)}),
    })
    table = gl.create_table(tmp_path / "db", "t", folder)
    got = table.to_arrow()
    assert got.column_names == ["id", "text", "vector", "lang"]
    assert got.schema.field("id").type == pa.int64()
    assert got.sort_by("text").select(["id", "lang"]).to_pylist() == [
        {"id": 1, "lang": None}, {"id": None, "lang": "en"}, {"id": 2**53 + 1, "lang": None}]

    clash = _corpus_folder(tmp_path / "clash", {
        "c1.parquet": pa.table({"id": [1], "text": ["alpha"], "vector": v.slice(0, 1)}),
        "c2.parquet": pa.table({"id": ["x"], "text": ["gamma"], "vector": v.slice(2, 1)}),
    })
    with pytest.raises(ValueError, match=r"c2.parquet: column 'id' is string, but .*c1.parquet has it as int64"):
        gl.create_table(tmp_path / "db", "t2", clash)


def test_lancedb_search_checks_its_arguments(corpus_output, embedder, tmp_path):
    import ggufembed.lancedb as gl

    table = gl.create_table(tmp_path / "db", "passages", corpus_output)
    with pytest.raises(TypeError, match="not bytes"):
        gl.search(table, embedder, b"who plays the flute?")
    for k in (0, -1, True, 2.5):
        with pytest.raises(ValueError, match="k must be a positive int"):
            gl.search(table, embedder, "who plays the flute?", k=k)
    for bad in (["-k", "0"], ["--threads", "0"]):
        with pytest.raises(SystemExit) as e:
            gl.main(["--db", str(tmp_path / "db"), "--table", "passages", "--query", "flute", *bad])
        assert e.value.code == 2, bad


def test_lancedb_refuses_a_folder_of_empty_outputs(tmp_path):
    import ggufembed.lancedb as gl

    folder = _corpus_folder(tmp_path / "empty", {"e.parquet": pa.table({}), "f.parquet": pa.table({})})
    with pytest.raises(ValueError, match=r"hold no rows \(2 empty file\(s\)\)"):
        gl.create_table(tmp_path / "db", "e", folder)
    with pytest.raises(SystemExit, match="hold no rows"):
        gl.main(["--db", str(tmp_path / "db"), "--table", "e", "--from", str(folder)])
