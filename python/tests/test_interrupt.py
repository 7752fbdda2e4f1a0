"""Ctrl-C: an interrupt during an embedding call is a KeyboardInterrupt, even on the first call."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap


def test_ctrl_c_during_the_first_call_is_a_keyboard_interrupt(model_path):
    """The first call of a process is where NumPy's C API used to be looked up, right after the
    GIL came back; a SIGINT that arrived during the computation then raised inside that lookup
    and surfaced as a Rust panic (PanicException) instead of KeyboardInterrupt."""
    # The child takes Ctrl-C as an interactive program does, whatever it inherited: Python leaves
    # SIGINT ignored when its parent ignored it (a shell's background job, `nohup cmd &`).
    code = f"""
        import os, signal, threading
        signal.signal(signal.SIGINT, signal.default_int_handler)
        from ggufembed import Embedder
        m = Embedder({str(model_path)!r}, threads=2)
        texts = ["A man is playing a flute in the park with friends."] * 600
        threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
        try:
            m.encode(texts, batch_size=1000)
        except KeyboardInterrupt:
            print("interrupted")
        else:
            print("finished before the interrupt")
        print("next call:", m.encode(["still works"]).shape)
    """
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300,
        env={**os.environ},
    )
    assert out.returncode == 0, out.stderr
    assert "panicked" not in out.stderr, out.stderr
    assert out.stdout.splitlines() == ["interrupted", "next call: (1, 768)"], out.stdout + out.stderr


def test_ctrl_c_stops_a_long_batch_within_a_layer_not_at_its_end(model_path):
    """One native call over minutes of work (256 texts of about 400 tokens, one batch): Ctrl-C
    stops the runtime within a layer of its current forward pass, so the KeyboardInterrupt comes
    seconds after the signal, not when the whole batch would have finished."""
    code = f"""
        import os, signal, threading, time
        signal.signal(signal.SIGINT, signal.default_int_handler)
        from ggufembed import Embedder
        m = Embedder({str(model_path)!r}, threads=2)
        texts = ["the quick brown fox jumps over the lazy dog " * 45] * 256
        threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
        start = time.monotonic()
        try:
            m.encode(texts, batch_size=256)
        except KeyboardInterrupt:
            print(f"interrupted after {{time.monotonic() - start:.1f}} s")
        else:
            print(f"finished after {{time.monotonic() - start:.1f}} s")
        print("next call:", m.encode(["still works"]).shape)
    """
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=600,
        env={**os.environ},
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith("interrupted after "), out.stdout + out.stderr
    # The whole batch is about 100,000 tokens: a minute or more on two cores. One layer of one
    # forward pass is a fraction of a second; 20 s leaves room for a loaded machine.
    assert float(lines[0].split()[2]) < 20, lines[0]
    assert lines[1] == "next call: (1, 768)", out.stdout
