"""`ggufembed serve` driven by the clients users call it with: the official `openai` Python
package, and `huggingface_hub`'s `InferenceClient` (the client of text-embeddings-inference,
which LangChain's `HuggingFaceEndpointEmbeddings` uses), pointed at the server's bare URL.

Needs GGUFEMBED_BIN (the built ggufembed binary) and GGUFEMBED_MODEL (the Q8_0 GGUF);
`cargo xtask test` sets both. The server is started once for the module on a free port, read
from its `listening on http://HOST:PORT` line, and stopped with SIGTERM (it must exit 0).
"""

import base64
import json
import os
import signal
import subprocess
import time
import urllib.request

import numpy as np
import openai
import pytest
from huggingface_hub import InferenceClient
from huggingface_hub.errors import HfHubHTTPError

TEXTS = [
    "A man is playing a flute.",
    "Someone plays a musical instrument.",
    "The stock market fell sharply today.",
]


def _env(name):
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set (cargo xtask test sets it)")
    return value


@pytest.fixture(scope="module")
def server():
    proc = subprocess.Popen(
        [_env("GGUFEMBED_BIN"), "serve", "--port", "0", "--threads", "2", "--model", _env("GGUFEMBED_MODEL")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("listening on http://"), f"first stdout line: {line!r}"
        base = line.removeprefix("listening on ")
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, f"server exited: {proc.stderr.read()}"
            assert time.monotonic() < deadline, "server not healthy within 120 s"
            time.sleep(0.1)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        assert code == 0, f"exit {code} after SIGTERM: {proc.stderr.read()}"


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)


def _floats(client, **kwargs):
    r = client.embeddings.create(model="embeddinggemma-300m", encoding_format="float", **kwargs)
    return np.array([d.embedding for d in r.data], dtype=np.float32), r


def test_default_encoding_is_base64_and_matches_float(client):
    # The client asks for base64 by default and decodes it with numpy's frombuffer(float32).
    r = client.embeddings.create(model="embeddinggemma-300m", input=TEXTS)
    got = np.array([d.embedding for d in r.data], dtype=np.float32)
    want, _ = _floats(client, input=TEXTS)
    assert got.shape == (3, 768)
    np.testing.assert_array_equal(got, want)
    assert [d.index for d in r.data] == [0, 1, 2]
    assert r.model == "embeddinggemma-300m"
    assert r.usage.prompt_tokens == r.usage.total_tokens > len(TEXTS) * 2


def test_float_vectors_are_unit_length_and_meaningful(client):
    v, r = _floats(client, input=TEXTS)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2], "related sentences are closer than unrelated ones"
    one, _ = _floats(client, input=TEXTS[0])
    np.testing.assert_array_equal(one[0], v[0])


def test_dimensions_are_a_renormalised_prefix(client):
    full, _ = _floats(client, input=TEXTS)
    for encoding in ("float", "base64"):
        r = client.embeddings.create(model="m", input=TEXTS, dimensions=256, encoding_format=encoding)
        if encoding == "base64":
            # Asked for explicitly, the client hands the string over as it came.
            v = np.stack([np.frombuffer(base64.b64decode(d.embedding), dtype="<f4") for d in r.data])
        else:
            v = np.array([d.embedding for d in r.data], dtype=np.float32)
        assert v.shape == (3, 256)
        np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
        prefix = full[:, :256] / np.linalg.norm(full[:, :256], axis=1, keepdims=True)
        np.testing.assert_allclose(v, prefix, atol=1e-6)


def test_prompt_name_as_extra_body(client):
    plain, _ = _floats(client, input=TEXTS[:1])
    query, r = _floats(client, input=TEXTS[:1], extra_body={"prompt_name": "query"})
    # The prompt changes the vector and its tokens count.
    assert not np.array_equal(plain, query)
    _, r_plain = _floats(client, input=TEXTS[:1])
    assert r.usage.prompt_tokens > r_plain.usage.prompt_tokens
    b64 = client.embeddings.create(model="m", input=TEXTS[:1], extra_body={"prompt_name": "query"})
    np.testing.assert_array_equal(np.array(b64.data[0].embedding, dtype=np.float32), query[0])


def test_token_id_inputs(client, server):
    with urllib.request.urlopen(
        urllib.request.Request(
            f"{server}/tokenize",
            data=b'{"inputs": "A man is playing a flute."}',
            headers={"content-type": "application/json"},
        )
    ) as r:
        ids = [t["id"] for t in json.load(r)[0]]
    by_ids, _ = _floats(client, input=[ids])
    by_text, _ = _floats(client, input=TEXTS[:1])
    np.testing.assert_array_equal(by_ids, by_text)


def test_errors_raise_the_clients_exceptions(client):
    with pytest.raises(openai.UnprocessableEntityError) as e:
        client.embeddings.create(model="m", input="x", dimensions=100)
    assert "768, 512, 256, 128" in str(e.value)
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="m", input=[])


@pytest.fixture(scope="module")
def hf(server):
    return InferenceClient(base_url=server)


def test_inference_client_feature_extraction_matches_openai(client, hf):
    # `feature_extraction` posts TEI's body to the bare URL, which answers it as `/embed`.
    want, _ = _floats(client, input=TEXTS)
    got = hf.feature_extraction(TEXTS[0])
    assert got.dtype == np.float32 and got.shape == (1, 768)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(hf.feature_extraction(TEXTS), want)
    # TEI's options: a prompt and a Matryoshka size, the same vectors as the OpenAI route's.
    query, _ = _floats(client, input=TEXTS, dimensions=256, extra_body={"prompt_name": "query"})
    got = hf.feature_extraction(TEXTS, prompt_name="query", dimensions=256, truncate=True, truncation_direction="left")
    np.testing.assert_array_equal(got, query)


def test_inference_client_sentence_similarity(client, hf):
    # `sentence_similarity` posts `{"inputs": {"source_sentence", "sentences"}}` to the bare URL.
    v, _ = _floats(client, input=TEXTS)
    scores = hf.sentence_similarity(TEXTS[0], TEXTS)
    np.testing.assert_allclose(scores, v @ v[0], atol=1e-6)
    assert scores[0] == pytest.approx(1.0, abs=1e-6)
    assert scores[1] > scores[2], "the related sentence scores higher than the unrelated one"


def test_inference_client_errors_carry_the_servers_message(hf):
    with pytest.raises(HfHubHTTPError) as e:
        hf.feature_extraction("x", dimensions=100)
    assert e.value.response.status_code == 422
    assert "768, 512, 256, 128" in str(e.value)
    with pytest.raises(HfHubHTTPError) as e:
        hf.sentence_similarity("x", [])
    assert e.value.response.status_code == 400
