#!/usr/bin/env python3
"""llama.cpp's own accuracy on the reference sets, for comparison with ours.

Embeds every text of ../shared/reference/emb-<set>.jsonl (its `input` field: the text with the
prompt prefix already applied) through llama.cpp (llama-cpp-python, `embedding=True`, mean
pooling and the dense head from the GGUF, normalize=True) and prints min / mean cosine against
emb-<set>.npy (sentence-transformers, float32) and how many texts fall below 0.9993.

    PYTHON -m pip install llama-cpp-python numpy   # see profiles/README.md for the build flags
    PYTHON xtask/peer_accuracy.py MODEL.gguf [REFERENCE_DIR]

Optional, not part of CI. Texts over 2048 tokens are skipped (llama.cpp has no truncation here).
"""

import json
import sys
from pathlib import Path

import numpy as np
from llama_cpp import Llama

SETS = ["dev-en", "dev-en-query", "dev-en-document", "dev-multi", "long", "edge"]


def main():
    model = sys.argv[1]
    ref_dir = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).resolve().parents[2] / "shared" / "reference"
    llm = Llama(model_path=model, embedding=True, n_ctx=2048, n_batch=2048, n_ubatch=2048, n_threads=1, verbose=False)
    for name in SETS:
        ref = np.load(ref_dir / f"emb-{name}.npy")
        rows = [json.loads(line) for line in open(ref_dir / f"emb-{name}.jsonl")]
        cos = []
        for i, row in enumerate(rows):
            if len(row["ids"]) > 2048:
                continue
            e = np.array(llm.embed(row["input"], normalize=True))
            r = ref[i] / np.linalg.norm(ref[i])
            cos.append(float(e @ r))
        cos = np.array(cos)
        print(f"{name}: {len(cos)} texts, min {cos.min():.5f}, mean {cos.mean():.5f}, below 0.9993: {(cos < 0.9993).sum()}", flush=True)


if __name__ == "__main__":
    main()
