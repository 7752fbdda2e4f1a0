#!/usr/bin/env python3
"""Peer driver for `cargo xtask bench-matrix --peer llama-cpp`.

Runs the same texts through llama.cpp (via the llama-cpp-python package) that xtask runs through
the Rust runtime, in the same process tree and the same run, and reports timings as JSON.

Protocol: one JSON object per line on stdin, one JSON reply per line on stdout.
  {"cmd": "hello"}                                   -> {"ok": true, "llama_cpp_python": "...", "python": "..."}
  {"cmd": "load", "model": P, "threads": T, "n_ctx": C, "n_batch": B}
                                                     -> {"ok": true, "load_s": s, "pooling": p, "n_embd": d}
  {"cmd": "pool", "name": N, "texts": [...]}         -> {"ok": true, "n": len}
  {"cmd": "rep", "pool": N, "batch": b, "k": k}    -> {"ok": true, "latency_s": s, "cpu_s": s, "tokens": n}
  {"cmd": "embed", "texts": [...]}                   -> {"ok": true, "vectors": [[...]], "tokens": [...]}
  {"cmd": "quit"}
Errors are replied as {"ok": false, "error": "..."}; the driver keeps serving.

Batch k of size b holds texts pool[(k*b + i) % n] for i in 0..b, the same windows xtask uses for
the Rust runtime, so both sides embed the same texts. xtask interleaves these calls with its own,
round-robin, and decides warm-up and repetitions itself. Timing is taken here, around
llama-cpp-python's embed() alone, so the pipe's overhead is not counted.
Without stdin commands (a terminal), `--selftest MODEL` embeds two sentences and prints them.
"""

import json
import os
import platform
import sys
import time


def window(pool, batch, k):
    n = len(pool)
    return [pool[(k * batch + i) % n] for i in range(batch)]


class Peer:
    def __init__(self):
        self.llm = None
        self.pools = {}

    def hello(self, _msg):
        import llama_cpp

        return {
            "llama_cpp_python": getattr(llama_cpp, "__version__", "unknown"),
            "python": platform.python_version(),
            "system_info": llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip(),
        }

    def load(self, msg):
        from llama_cpp import Llama

        if self.llm is not None:
            self.llm.close()
            self.llm = None
        t0 = time.perf_counter()
        threads = int(msg["threads"])
        n_ctx = int(msg.get("n_ctx", 512))
        n_batch = int(msg.get("n_batch", n_ctx))
        # embedding=True makes llama.cpp pool per sequence with the GGUF's pooling type (mean for
        # EmbeddingGemma) and run the dense_2/dense_3 head after pooling, as sentence-transformers does.
        self.llm = Llama(
            model_path=msg["model"],
            embedding=True,
            n_threads=threads,
            n_threads_batch=threads,
            n_ctx=n_ctx,
            n_batch=n_batch,
            n_ubatch=n_batch,
            verbose=False,
        )
        return {
            "load_s": time.perf_counter() - t0,
            "pooling": str(self.llm.pooling_type()),
            "n_embd": self.llm.n_embd(),
            "n_ctx": self.llm.n_ctx(),
            "n_batch": self.llm.n_batch,
        }

    def pool(self, msg):
        self.pools[msg["name"]] = list(msg["texts"])
        return {"n": len(self.pools[msg["name"]])}

    def _embed(self, texts):
        # normalize=True: the Rust runtime returns unit vectors too, so both sides do the same work.
        return self.llm.embed(texts, normalize=True, truncate=True, return_count=True)

    def rep(self, msg):
        if self.llm is None:
            raise RuntimeError("rep before load")
        texts = window(self.pools[msg["pool"]], int(msg["batch"]), int(msg["k"]))
        c0 = time.process_time()
        t0 = time.perf_counter()
        _, n_tokens = self._embed(texts)
        t1 = time.perf_counter()
        c1 = time.process_time()
        return {"latency_s": t1 - t0, "cpu_s": c1 - c0, "tokens": n_tokens}

    def embed(self, msg):
        if self.llm is None:
            raise RuntimeError("embed before load")
        vectors = []
        tokens = []
        for t in msg["texts"]:
            v, n = self._embed([t])
            vectors.append(v[0])
            tokens.append(n)
        return {"vectors": vectors, "tokens": tokens}


def serve():
    peer = Peer()
    handlers = {
        "hello": peer.hello,
        "load": peer.load,
        "pool": peer.pool,
        "rep": peer.rep,
        "embed": peer.embed,
    }
    # Replies go to a private copy of stdout; fd 1 itself is pointed at stderr so anything the C
    # library prints cannot corrupt the protocol.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            msg = json.loads(line)
            cmd = msg.get("cmd")
            if cmd == "quit":
                break
            if cmd not in handlers:
                raise ValueError(f"unknown command {cmd!r}")
            reply = handlers[cmd](msg)
            reply["ok"] = True
        except Exception as e:  # noqa: BLE001 - every failure goes back to xtask as a reply
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


def selftest(model):
    peer = Peer()
    print(json.dumps(peer.hello({})))
    print(json.dumps(peer.load({"model": model, "threads": os.cpu_count() or 1})))
    r = peer.embed({"texts": ["A man is playing a flute.", "A woman is playing the guitar."]})
    a, b = r["vectors"]
    print(json.dumps({"tokens": r["tokens"], "dim": len(a), "cos": sum(x * y for x, y in zip(a, b))}))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--selftest":
        selftest(sys.argv[2])
    else:
        serve()
