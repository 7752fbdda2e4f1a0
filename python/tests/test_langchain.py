"""ggufembed.langchain against langchain-core itself."""

from __future__ import annotations

import numpy as np
import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import InMemoryVectorStore

from ggufembed.langchain import GgufEmbeddings

DOCS = [
    "The flute is a woodwind instrument played by blowing across a hole.",
    "The stock market fell sharply on Monday.",
    "Paris is the capital of France.",
]


def test_documents_and_queries_use_the_model_prompts(embedder):
    lc = GgufEmbeddings(embedder=embedder)
    assert isinstance(lc, Embeddings)
    docs = lc.embed_documents(DOCS)
    assert isinstance(docs, list) and isinstance(docs[0], list) and isinstance(docs[0][0], float)
    assert np.array_equal(np.asarray(docs, dtype=np.float32), embedder.encode_document(DOCS))
    q = lc.embed_query("Which instrument do you blow across?")
    assert np.array_equal(np.asarray(q, dtype=np.float32), embedder.encode_query("Which instrument do you blow across?"))


def test_a_langchain_vector_store_finds_the_right_passage(embedder):
    store = InMemoryVectorStore(GgufEmbeddings(embedder=embedder, dims=256))
    store.add_documents([Document(page_content=d, id=str(i)) for i, d in enumerate(DOCS)])
    hits = store.similarity_search("What is France's capital city?", k=1)
    assert hits[0].page_content == DOCS[2]
    assert len(store.embeddings.embed_query("x")) == 256


def test_wrong_shapes_and_bad_options_are_refused(embedder):
    lc = GgufEmbeddings(embedder=embedder)
    with pytest.raises(TypeError, match="not a str"):
        lc.embed_documents("abc")
    with pytest.raises(TypeError, match="one text"):
        lc.embed_query(["a", "b"])
    # At construction, not at the first embed call.
    with pytest.raises(ValueError, match="Matryoshka"):
        GgufEmbeddings(embedder=embedder, dims=100)
    with pytest.raises(ValueError, match="batch_size"):
        GgufEmbeddings(embedder=embedder, batch_size=0)
