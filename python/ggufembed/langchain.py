"""LangChain integration: ``GgufEmbeddings``, an ``Embeddings`` backed by ggufembed.

Needs ``langchain-core`` (``pip install "ggufembed[langchain]"``). Documents are embedded with
EmbeddingGemma's ``document`` prompt and queries with its ``query`` prompt, as the model was
trained for retrieval.
"""

from __future__ import annotations

import os

try:
    from langchain_core.embeddings import Embeddings
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "ggufembed.langchain needs langchain-core: pip install 'ggufembed[langchain]'"
    ) from e

from ggufembed._embedder import Embedder, _matryoshka_dim, _positive_int

__all__ = ["GgufEmbeddings"]


class GgufEmbeddings(Embeddings):
    """LangChain ``Embeddings`` computed by ggufembed on this machine's CPU.

    Give a GGUF path (default: the default model, fetched on first use), or an existing
    ``ggufembed.Embedder`` to share its model and threads. ``dims`` keeps a Matryoshka prefix
    (768, 512, 256 or 128), renormalised to unit length so cosine and dot-product stores agree.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        embedder: Embedder | None = None,
        threads: int | None = None,
        batch_size: int = 32,
        dims: int | None = None,
    ) -> None:
        if embedder is not None and (model is not None or threads is not None):
            raise ValueError("give either embedder or model/threads, not both")
        # Checked here, so that a bad value fails where it was written, not at the first embed.
        self.batch_size = _positive_int("batch_size", batch_size)
        self.dims = None if dims is None else _matryoshka_dim("dims", dims)
        self.embedder = embedder if embedder is not None else Embedder(model, threads=threads)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Vectors of passages to be searched (the model's ``document`` prompt)."""
        if isinstance(texts, str):
            raise TypeError("embed_documents takes a list of texts, not a str; embed_query takes one text")
        return self.embedder.encode_document(
            list(texts), batch_size=self.batch_size, truncate_dim=self.dims, normalize_embeddings=self.dims is not None
        ).tolist()

    def embed_query(self, text: str) -> list[float]:
        """The vector of a search query (the model's ``query`` prompt)."""
        if not isinstance(text, str):
            raise TypeError(f"embed_query takes one text (a str), not {type(text).__name__}; embed_documents takes a list")
        return self.embedder.encode_query(
            text, batch_size=self.batch_size, truncate_dim=self.dims, normalize_embeddings=self.dims is not None
        ).tolist()
