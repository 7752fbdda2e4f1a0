"""Memory of `ggufembed serve` under a flood of large requests: peak RSS and the answers.

Starts the server (port 0, the default Q8_0 model or --model), opens CONNECTIONS sockets that
each send a `/v1/embeddings` request of one text of about --text-bytes bytes (mixed CJK, emoji
and Arabic, the costliest kind to tokenize) but hold back its last byte; once all are open, the
last bytes go out together, so every body is complete at the same moment. It prints how the
requests were answered (429 before their bodies were read, 503 after the queue timeout, 200)
and the server's peak resident memory (VmHWM, Linux), before the flood and after it.

    python python/bench/flood_server.py --bin target/release/ggufembed --connections 800 \\
        [--text-bytes 1350000] [-- SERVE ARGS...]

Standard library only. The file-descriptor limit must exceed the connections (`ulimit -n`).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import socket
import subprocess
import sys
import threading
import time
from collections import Counter


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/PID/status")


def body(text_bytes: int) -> bytes:
    rng = random.Random(2)
    chars = []
    size = 0
    while size < text_bytes:
        c = chr(rng.choice([0x4E00 + rng.randrange(2000), 0x1F600 + rng.randrange(80), 0x0600 + rng.randrange(200)]))
        chars.append(c)
        size += len(c.encode())
    return json.dumps({"input": "".join(chars)}, ensure_ascii=False).encode()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="target/release/ggufembed")
    ap.add_argument("--model", help="GGUF model (default: the server's default)")
    ap.add_argument("--connections", type=int, default=800)
    ap.add_argument("--text-bytes", type=int, default=1_350_000)
    ap.add_argument("serve_args", nargs="*", help="extra `ggufembed serve` arguments (after --)")
    args = ap.parse_args()

    cmd = [args.bin, "serve", "--port", "0", *(["--model", args.model] if args.model else []), *args.serve_args]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        m = re.search(r"listening on http://([\d.]+):(\d+)", server.stdout.readline())
        if not m:
            raise RuntimeError("the server did not start")
        host, port = m.group(1), int(m.group(2))
        for _ in range(600):
            try:
                with socket.create_connection((host, port)) as s:
                    s.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                    if s.recv(64).startswith(b"HTTP/1.1 200"):
                        break
            except OSError:
                pass
            time.sleep(0.1)
        before = peak_rss_mib(server.pid)

        payload = body(args.text_bytes)
        head = (
            f"POST /v1/embeddings HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
            f"content-type: application/json\r\ncontent-length: {len(payload)}\r\n\r\n"
        ).encode()
        socks = []
        for _ in range(args.connections):
            s = socket.create_connection((host, port))
            try:
                s.sendall(head + payload[:-1])
            except OSError:
                pass  # refused before its body was read: the answer is waiting
            socks.append(s)
        time.sleep(1)
        t0 = time.time()
        for s in socks:
            try:
                s.sendall(payload[-1:])
            except OSError:
                pass
        answers: Counter[str] = Counter()
        lock = threading.Lock()

        def read(s: socket.socket) -> None:
            try:
                first = s.recv(64)
            except OSError:
                first = b""
            code = first.split(b" ")[1].decode() if first.startswith(b"HTTP/1.1 ") else "none"
            with lock:
                answers[code] += 1
            s.close()

        threads = [threading.Thread(target=read, args=(s,)) for s in socks]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        took = time.time() - t0
        after = peak_rss_mib(server.pid)
        print(f"{args.connections} connections x {len(payload) / 1e6:.2f} MB bodies, serve args {args.serve_args or '(defaults)'}")
        print(f"answers: {dict(sorted(answers.items()))} in {took:.1f} s")
        print(f"server peak RSS: {before:.0f} MiB before the flood, {after:.0f} MiB after")
    finally:
        server.terminate()
        server.wait(timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
