"""Fuzzing the HTTP service: schemathesis over the OpenAPI schema, hostile uploads,
slow clients and API-key brute force."""

from __future__ import annotations

import inspect
import io
import string
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from allseg.outputs.schema import ImageResult
from allseg.service import create_app, security

API_KEY = "s3cret-key-0123456789"
META = {"canonical_um_per_px": 0.3, "classes": {"classifier": ["other", "blast"]},
        "thresholds": {"blast_probability": 0.5}, "training": {}}


class EmptyPredictor:
    """Finds no cells: keeps the fuzzing about the HTTP layer, not the model."""

    meta = META
    model_info = {"name": "stub", "backend": "none", "tta": False}

    def predict_image(self, image, name="image", um_per_px=None, cell_diameter_px=None):
        h, w = image.shape[:2]
        return ImageResult(image=name, width=w, height=h, um_per_px=um_per_px or 0.3,
                           scale_source="user" if um_per_px else "default", cells=[],
                           model={"name": "stub"}, timings={"total": 0.0},
                           parts=np.zeros((h, w), np.uint8),
                           instances=np.zeros((h, w), np.uint16))


def png_bytes(h: int = 12, w: int = 16) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((h, w, 3), 200, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def client_for(**kw) -> TestClient:
    return TestClient(create_app(EmptyPredictor(), **kw), raise_server_exceptions=False)


# ---------------------------------------------------------------- schemathesis

schemathesis = pytest.importorskip("schemathesis")
from schemathesis.specs.openapi.checks import (  # noqa: E402
    response_schema_conformance,
    status_code_conformance,
)

SCHEMA_APP = create_app(EmptyPredictor(), max_upload_bytes=200_000, max_pixels=1_000_000)
schema = schemathesis.openapi.from_asgi("/openapi.json", SCHEMA_APP)


def not_a_server_error(ctx, response, case) -> None:
    assert response.status_code < 500, (
        f"{case.method} {case.path} -> {response.status_code}: {response.text[:300]}")


@schema.parametrize()
@settings(max_examples=25, deadline=3000, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_openapi_operations_never_5xx_and_conform(case) -> None:
    response = case.call()
    not_a_server_error(None, response, case)
    if response.status_code < 400:
        # A successful reply must match the schema; errors on upload endpoints (413, 415,
        # 422 ...) are by design and FastAPI does not list them all.
        case.validate_response(response, checks=[response_schema_conformance],
                               excluded_checks=[status_code_conformance])


# ---------------------------------------------------------------- uploads


UPLOAD = st.one_of(st.binary(max_size=300),
                   st.integers(1, 300).map(lambda n: png_bytes()[:n]),
                   st.just(png_bytes()))


@settings(max_examples=40, deadline=3000, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(body=UPLOAD, multipart=st.booleans(), legacy=st.booleans(),
       content_type=st.sampled_from(["image/png", "application/octet-stream", "text/plain",
                                     "multipart/form-data; boundary=x", ""]))
def test_arbitrary_upload_bytes_never_5xx(body: bytes, multipart: bool, legacy: bool,
                                          content_type: str) -> None:
    client = client_for(max_upload_bytes=200_000)
    path = "/Inference" if legacy else "/v1/predict"
    if multipart:
        reply = client.post(path, files={"file": ("x.png", body, content_type or "image/png")})
    else:
        reply = client.post(path, content=body,
                            headers={"content-type": content_type} if content_type else {})
    assert reply.status_code < 500, reply.text
    assert reply.status_code in (200, 400, 413, 415, 422), (reply.status_code, reply.text)
    if legacy:
        assert reply.json()["Response"] in ("OK", "FAILED")


def test_oversized_upload_is_refused_before_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    client = client_for(max_upload_bytes=1000)
    # Declared too large: refused from the header alone.
    declared = client.post("/v1/predict", content=b"x" * 10,
                           headers={"content-length": str(10**12)})
    assert declared.status_code == 413
    # A lying Content-Length cannot sneak a big body past the limit.
    lying = client.post("/v1/predict", content=b"\x89PNG" + b"x" * 200_000,
                        headers={"content-length": "100"})
    assert lying.status_code in (400, 413), lying.status_code
    bad = client.post("/v1/predict", content=b"x", headers={"content-length": "abc"})
    assert bad.status_code == 400
    multipart = client.post("/v1/predict", files={"file": ("big.png", b"x" * 200_000)})
    assert multipart.status_code == 413


async def _asgi_post(app, chunks, delay_s: float, path: str = "/v1/predict"):
    """POST straight through the ASGI app with a client that sends ``chunks`` slowly
    (TestClient would buffer the whole body first). Returns (status, chunks sent)."""
    import asyncio

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "", "client": ("10.0.0.1", 5000),
             "server": ("test", 80), "headers": [(b"content-type", b"image/png")]}
    sent, replies = [0], []
    pending = list(chunks)

    async def receive():
        if not pending:
            await asyncio.sleep(3600)  # a client that stops sending altogether
        await asyncio.sleep(delay_s)
        sent[0] += 1
        body = pending.pop(0)
        return {"type": "http.request", "body": body, "more_body": bool(pending)}

    async def send(message):
        replies.append(message)

    await asyncio.wait_for(app(scope, receive, send), 10)
    return replies[0]["status"], sent[0]


def test_slow_client_is_bounded_by_the_request_timeout() -> None:
    import asyncio

    app = create_app(EmptyPredictor(), max_upload_bytes=1_000_000, request_timeout_s=0.5)
    started = time.monotonic()
    status, sent = asyncio.run(_asgi_post(app, [b"\x89PNG" * 4] * 40, delay_s=0.1))
    assert status == 408
    assert time.monotonic() - started < 3.0 and sent < 40
    assert app.state.queue.busy == 0, "the queue slot is released after a timeout"


def test_slow_oversized_body_stops_at_the_size_limit() -> None:
    import asyncio

    app = create_app(EmptyPredictor(), max_upload_bytes=2000, request_timeout_s=30)
    status, sent = asyncio.run(_asgi_post(app, [b"y" * 1000] * 200, delay_s=0.005))
    assert status == 413
    assert sent <= 4, f"{sent} chunks read despite the 2000-byte limit"
    assert app.state.queue.busy == 0


# ---------------------------------------------------------------- API key brute force


@settings(max_examples=10, deadline=3000, derandomize=True)
@given(keys=st.lists(st.text(string.ascii_letters + string.digits + "-_.~+/=",
                             min_size=1, max_size=40).filter(lambda k: k != API_KEY),
                     min_size=12, max_size=14))
def test_wrong_keys_are_rate_limited(keys: list[str]) -> None:
    client = client_for(api_key=API_KEY)
    codes = [client.get("/v1/model", headers={"x-api-key": k}).status_code for k in keys]
    assert codes[:10] == [401] * 10 and set(codes[10:]) == {429}
    # Once blocked, even the right key waits: brute force cannot test guesses for free.
    blocked = client.get("/v1/model", headers={"x-api-key": API_KEY})
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) >= 1
    assert client.get("/healthz").status_code == 200


def test_prefix_guesses_get_no_special_treatment() -> None:
    client = client_for(api_key=API_KEY)
    for n in range(1, 6):
        reply = client.get("/v1/model", headers={"authorization": f"Bearer {API_KEY[:n]}"})
        assert reply.status_code == 401


def test_key_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    source = inspect.getsource(security.key_matches)
    assert "compare_digest" in source and "==" not in source
    calls = []
    real = security.hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(security.hmac, "compare_digest", spy)
    client = client_for(api_key=API_KEY)
    assert client.get("/v1/model", headers={"x-api-key": "wrong"}).status_code == 401
    assert client.get("/v1/model", headers={"x-api-key": API_KEY}).status_code == 200
    assert calls == [(b"wrong", API_KEY.encode()), (API_KEY.encode(), API_KEY.encode())]
