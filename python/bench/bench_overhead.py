"""Python overhead at batch 32: ggufembed's Python `Embedder.encode` against the Rust library
on the same texts, threads and parallelism mode.

The Rust side is the `ggufembed embed` CLI (`--verbose` times its embed loop: one
`embed_prepared` call of the runtime per batch, tokenization done before the timer starts). The
Python side times `Embedder.encode(texts, batch_size=32)`, which includes tokenizing (as the
library's `embed` call does), argument conversion and copying each batch into the result; the
tokenizing time is measured too and the ratio is also given without it. Rounds alternate between the two so that
machine noise hits both alike; the medians are reported with their ratio.

    python python/bench/bench_overhead.py --bin target/release/ggufembed [--texts 640 --rounds 5]

Run it on an otherwise idle machine: the figure is a ratio of two throughputs of a few seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import ggufembed  # noqa: E402
from ggufembed_test_support import find_reference_dir  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.environ.get("GGUFEMBED_BIN", "target/release/ggufembed"))
    ap.add_argument("--model", default=os.environ.get("GGUFEMBED_MODEL"))
    ap.add_argument("--texts", type=int, default=640, help="STS-B dev sentences (tokens-dev-en.jsonl)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--mode", default="auto", choices=["auto", "coarse", "fine"])
    args = ap.parse_args()

    model = args.model or str(ggufembed.default_model_path())
    lines = (find_reference_dir() / "tokens-dev-en.jsonl").read_text(encoding="utf-8").splitlines()
    texts = [json.loads(line)["text"] for line in lines[: args.texts]]

    embedder = ggufembed.Embedder(model, threads=args.threads, parallelism=args.mode)
    embedder.encode(texts[: args.batch_size * 2], batch_size=args.batch_size)  # warm-up

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "texts.jsonl"
        src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
        cmd = [args.bin, "embed", "--model", model, "--input", str(src), "--jsonl", "--format", "npy",
               "--output", str(Path(tmp) / "out.npy"), "--threads", str(args.threads), "--mode", args.mode,
               "--batch-size", str(args.batch_size), "--verbose"]
        rust, python, tokenize = [], [], []
        for r in range(args.rounds):
            err = subprocess.run(cmd, check=True, capture_output=True, text=True).stderr
            m = re.search(r"([\d.]+) texts/s", err)
            if not m:
                sys.exit(f"no throughput in the CLI's output:\n{err}")
            rust.append(float(m.group(1)))
            t0 = time.perf_counter()
            embedder.encode(texts, batch_size=args.batch_size)
            python.append(len(texts) / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            embedder.tokenize(texts)
            tokenize.append(time.perf_counter() - t0)
            print(f"round {r + 1}: rust {rust[-1]:.1f} texts/s, python {python[-1]:.1f} texts/s "
                  f"(tokenizing {tokenize[-1] * 1000:.1f} ms)", flush=True)

    rm, pm = statistics.median(rust), statistics.median(python)
    print(f"{len(texts)} texts, batch {args.batch_size}, {args.threads} threads, mode {args.mode}, "
          f"isa {embedder.isa}, {args.rounds} rounds")
    print(f"median: rust {rm:.1f} texts/s, python {pm:.1f} texts/s, python/rust = {pm / rm:.3f}")
    # The CLI tokenizes every text before its timer starts; Embedder.encode (like the library's
    # embed call) tokenizes inside each call. Without that share, the ratio is the binding's own.
    adj = len(texts) / (len(texts) / pm - statistics.median(tokenize))
    print(f"tokenizing {statistics.median(tokenize) * 1000:.1f} ms per pass; python without it "
          f"{adj:.1f} texts/s, python/rust = {adj / rm:.3f}")


if __name__ == "__main__":
    main()
