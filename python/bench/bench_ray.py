"""Per-actor figures for docs/SCALE.md, on a local Ray cluster of this machine.

For 1 and 2 actors of 1 CPU (and 1 thread) each: start-up (actor creation to ready: a Python
worker process, `import ggufembed`, model load), texts/s per actor on the same STS-B sentences,
and memory per actor from /proc/self/smaps_rollup (RSS and PSS, split into file-backed pages,
which for the GGUF's memory map are shared between processes, and anonymous ones, which are
not). Then the whole `ggufembed.ray.embed_dataset` pipeline end to end.

    python python/bench/bench_ray.py [--model FILE] [--texts 1024]

Run it on an otherwise idle machine; it prints the load average it started with.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_worker_niceness", "0")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import ray  # noqa: E402

import ggufembed  # noqa: E402
from ggufembed_test_support import find_reference_dir  # noqa: E402


def smaps() -> dict[str, int]:
    """kB: smaps_rollup's Rss/Pss (Pss_File, Pss_Anon, Shared_Clean) and status' RssFile/RssAnon."""
    out = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        k, v = line.split(":", 1)
        out[k] = int(v.split()[0])
    for line in Path("/proc/self/status").read_text().splitlines():
        k, v = line.split(":", 1)
        if k in ("RssAnon", "RssFile", "RssShmem"):
            out[k] = int(v.split()[0])
    return out


@ray.remote(num_cpus=1)
class Probe:
    def __init__(self, model: str, threads: int) -> None:
        t0 = time.perf_counter()
        self.embedder = ggufembed.Embedder(model, threads=threads)
        self.load = time.perf_counter() - t0

    def load_seconds(self) -> float:
        return self.load

    def embed(self, texts: list[str]) -> float:
        t0 = time.perf_counter()
        self.embedder.encode(texts, batch_size=32)
        return time.perf_counter() - t0

    def memory(self) -> dict[str, int]:
        return smaps()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.environ.get("GGUFEMBED_MODEL"))
    ap.add_argument("--texts", type=int, default=1024)
    ap.add_argument("--passages", type=int, default=16, help="~512-token passages per actor")
    args = ap.parse_args()
    model = args.model or str(ggufembed.default_model_path())
    lines = (find_reference_dir() / "tokens-dev-en.jsonl").read_text(encoding="utf-8").splitlines()
    texts = [json.loads(line)["text"] for line in lines[: args.texts]]
    print(f"load average at start: {os.getloadavg()}, {os.cpu_count()} CPUs, {len(texts)} texts")

    # ~512-token passages: consecutive sentences joined until the model input reaches 512 tokens.
    local = ggufembed.Embedder(model, threads=1)
    passages, cur = [], []
    for t in texts * 4:
        cur.append(t)
        if len(local.tokenize(" ".join(cur))[0]) >= 512:
            passages.append(" ".join(cur))
            cur = []
        if len(passages) == args.passages:
            break
    del local

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    results = {}
    for n in (1, 2):
        t0 = time.perf_counter()
        actors = [Probe.remote(model, 1) for _ in range(n)]
        ray.get([a.__ray_ready__.remote() for a in actors])
        ready = time.perf_counter() - t0
        loads = ray.get([a.load_seconds.remote() for a in actors])
        ray.get([a.embed.remote(texts[:64]) for a in actors])  # warm-up
        t0 = time.perf_counter()
        times = ray.get([a.embed.remote(texts) for a in actors])  # every actor embeds all texts
        wall = time.perf_counter() - t0
        t0 = time.perf_counter()
        ptimes = ray.get([a.embed.remote(passages) for a in actors])
        mem = ray.get([a.memory.remote() for a in actors])
        print(f"\n{n} actor(s): ~512-token passages/s per actor: "
              f"{', '.join(f'{len(passages) / t:.2f}' for t in ptimes)}")
        per_actor = [len(texts) / t for t in times]
        results[n] = {"ready_s": ready, "model_load_s": loads, "per_actor_texts_s": per_actor,
                      "total_texts_s": n * len(texts) / wall, "memory_kB": mem}
        print(f"{n} actor(s) x 1 CPU: all ready after {ready:.2f} s (model load {', '.join(f'{x:.2f}' for x in loads)} s)")
        print(f"  texts/s per actor: {', '.join(f'{x:.1f}' for x in per_actor)}; together {results[n]['total_texts_s']:.1f}")
        for i, m in enumerate(mem):
            print(f"  actor {i}: RSS {m['Rss'] / 1024:.0f} MB (file {m.get('RssFile', 0) / 1024:.0f}, "
                  f"anon {m.get('RssAnon', 0) / 1024:.0f}); PSS {m['Pss'] / 1024:.0f} MB "
                  f"(file {m.get('Pss_File', 0) / 1024:.0f}, anon {m.get('Pss_Anon', 0) / 1024:.0f}); "
                  f"shared clean {m.get('Shared_Clean', 0) / 1024:.0f} MB")
        for a in actors:
            ray.kill(a)
        time.sleep(1)

    import ggufembed.ray as gr

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ds = ray.data.from_items([{"text": t} for t in texts * 2])
    t0 = time.perf_counter()
    n = sum(b.num_rows for b in gr.embed_dataset(ds, actors=2, cpus_per_actor=1, model=model,
                                                    batch_size=128).iter_batches(batch_format="pyarrow"))
    wall = time.perf_counter() - t0
    print(f"\nembed_dataset, 2 actors x 1 CPU, {n} texts from a dataset in memory: {wall:.1f} s "
          f"including actor start-up, {n / wall:.1f} texts/s")
    ray.shutdown()


if __name__ == "__main__":
    main()
