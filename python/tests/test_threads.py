"""Threads: the GIL is released, the thread count is respected, fork() is safe."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np

import ggufembed


def test_the_gil_is_released_during_embedding(embedder, reference_set):
    """Two threads encode through one embedder while a third runs pure Python.

    Every call into the runtime is timed from inside its thread. If a call held the GIL, the
    pure-Python thread could not run for that call's whole duration, so the longest gap between
    two of its iterations would be at least as long as the shortest call; and the two encoding
    threads' calls could not overlap."""
    cases, _ = reference_set("dev-en")
    texts = [c["text"] for c in cases[:48]]
    calls: dict[int, list[tuple[float, float]]] = {0: [], 1: []}
    done = threading.Event()
    stamps: list[float] = []

    def encode(k: int) -> None:
        for _ in range(3):
            t0 = time.perf_counter()
            embedder.encode(texts, batch_size=48)
            calls[k].append((t0, time.perf_counter()))

    def spin() -> None:
        while not done.is_set():
            x = 0
            for i in range(200):  # a little pure-Python work per iteration
                x += i * i
            stamps.append(time.perf_counter())

    spinner = threading.Thread(target=spin)
    workers = [threading.Thread(target=encode, args=(k,)) for k in (0, 1)]
    spinner.start()
    time.sleep(0.05)
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    done.set()
    spinner.join()

    assert len(calls[0]) == len(calls[1]) == 3, "both encoding threads finished every call"
    start = min(c[0] for k in calls for c in calls[k])
    end = max(c[1] for k in calls for c in calls[k])
    shortest = min(e - s for k in calls for s, e in calls[k])
    inside = [t for t in stamps if start <= t <= end]
    gaps = np.diff(inside)
    print(f"calls {shortest:.3f}-{max(e - s for k in calls for s, e in calls[k]):.3f} s, "
          f"pure-Python iterations during them {len(inside)}, longest gap {gaps.max():.4f} s")
    assert len(inside) > 100, "the pure-Python thread kept running"
    assert gaps.max() < shortest / 2, "no runtime call held the GIL for its duration"
    # The two threads' calls overlapped in time (each thread was inside the runtime at once).
    overlap = sum(
        max(0.0, min(e0, e1) - max(s0, s1)) for s0, e0 in calls[0] for s1, e1 in calls[1]
    )
    assert overlap > shortest / 2, f"calls of the two threads overlapped by {overlap:.3f} s only"


def _run_python(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300,
        env={**os.environ},
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_thread_count_is_explicit_and_respected(model_path):
    """In a fresh process (so no other test's threads are counted): an embedder of n threads
    starts at most n threads, and calls leave none behind (a call runs on a thread of its own,
    so that the caller's thread can take Ctrl-C, and joins it; the kernel may list a joined
    thread for a few microseconds more, a leaked one forever)."""
    out = _run_python(
        f"""
        import os, time, ggufembed
        tasks = lambda: len(os.listdir("/proc/self/task"))
        def settled(target):
            for _ in range(100):
                if tasks() <= target:
                    break
                time.sleep(0.01)
            return tasks()
        before = tasks()
        for n in (1, 3):
            e = ggufembed.Embedder({str(model_path)!r}, threads=n)
            built = tasks()
            e.encode(["a text"] * 40, batch_size=40)
            e.encode("one")
            print(n, e.threads, built - before, settled(built) - built)
            del e
            before = tasks()
        """
    )
    rows = [list(map(int, line.split())) for line in out.split("\n") if line.strip()]
    assert [r[0] for r in rows] == [1, 3]
    for n, reported, started, during_calls in rows:
        assert reported == n
        assert started <= n, f"{started} threads started for threads={n}"
        assert during_calls == 0, f"calls started {during_calls} threads"


def test_a_forked_child_builds_its_own_embedder(embedder, model_path):
    """multiprocessing's default start method on Linux: fork() with the parent's pool running.
    The child's first call builds the child's own pool from the same recipe; the native object
    it inherited refuses, rather than waiting forever on threads that do not exist there."""
    texts = ["A man is playing a flute.", "Someone plays music."]
    parent = embedder.encode(texts)  # the parent's worker threads exist and have run
    inherited = embedder._native
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            os.close(r)
            try:
                inherited.embed(texts)
            except RuntimeError as e:
                assert "another process" in str(e)
            else:
                raise AssertionError("the parent's native embedder was usable in the child")
            child = embedder.encode(texts)
            assert embedder._native is not inherited and embedder.threads == 2
            os.write(w, child.tobytes())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    deadline = time.monotonic() + 240
    status = None
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        raise AssertionError("the forked child deadlocked")
    data = b""
    while chunk := os.read(r, 1 << 16):
        data += chunk
    os.close(r)
    assert os.waitstatus_to_exitcode(status) == 0
    child = np.frombuffer(data, dtype=np.float32).reshape(parent.shape)
    assert np.array_equal(child, parent)
