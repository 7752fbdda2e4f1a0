"""EmbeddingGemma-300M text embeddings from GGUF, computed by a pure-Rust runtime.

>>> from ggufembed import Embedder
>>> m = Embedder(threads=2)
>>> m.encode("a text").shape
(768,)

Optional modules: ``ggufembed.langchain`` (``pip install ggufembed[langchain]``),
``ggufembed.ray`` and ``python -m ggufembed.corpus`` (``[ray]``), ``ggufembed.lancedb``
(``[lancedb]``).
"""

from ggufembed._embedder import Embedder, TruncationWarning
from ggufembed._native import MATRYOSHKA_DIMS, ModelError, TextError, __version__, default_model_path

__all__ = [
    "MATRYOSHKA_DIMS",
    "Embedder",
    "ModelError",
    "TextError",
    "TruncationWarning",
    "__version__",
    "default_model_path",
]
