"""The HTTP service: endpoints, legacy /Inference, auth, bad inputs, queue and errors."""

from __future__ import annotations

import base64
import io
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from allseg.data.record import BLAST, LEUKOCYTE, NUCLEUS
from allseg.outputs.schema import CellResult, ImageResult
from allseg.outputs.writers import CSV_COLUMNS
from allseg.service import create_app
from allseg.service.security import FailureLimiter

META = {"canonical_um_per_px": 0.3, "crop_size": 32, "crop_um": 24.0,
        "thresholds": {"blast_probability": 0.5, "centre": 0.5, "min_cell_area_um2": 15.0},
        "classes": {"segmenter": ["background", "cytoplasm", "nucleus"],
                    "classifier": ["other", "blast"]},
        "training": {"classifier": {"best": {"val_auc": 0.9}}}}


def png_bytes(h: int = 60, w: int = 80, seed: int = 0) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(arr).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(h: int = 60, w: int = 80) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((h, w, 3), 200, np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def make_result(image: np.ndarray, name: str, n_blasts: int, n_other: int = 2) -> ImageResult:
    """A prepared result: square cells along the top-left diagonal."""
    h, w = image.shape[:2]
    parts, instances = np.zeros((h, w), np.uint8), np.zeros((h, w), np.uint16)
    cells = []
    for i in range(n_blasts + n_other):
        x0, y0 = 2 + 8 * i, 2 + 6 * i
        instances[y0:y0 + 5, x0:x0 + 5] = i + 1
        parts[y0 + 1:y0 + 4, x0 + 1:x0 + 4] = NUCLEUS
        blast = i < n_blasts
        cells.append(CellResult(
            id=i + 1, centroid=[x0 + 2.0, y0 + 2.0], bbox=[x0, y0, x0 + 5, y0 + 5], area_px=25,
            cls=BLAST if blast else LEUKOCYTE, blast_probability=0.9 if blast else 0.1,
            features={"area_um2": 2.25, "nc_ratio": 0.5, "circularity": 0.8,
                      "diameter_um": 1.7, "chromatin_texture": 0.1, "nucleolus_count": 1},
            contour=[[x0, y0], [x0 + 4, y0], [x0 + 4, y0 + 4], [x0, y0 + 4]]))
    return ImageResult(image=name, width=w, height=h, um_per_px=0.3, scale_source="user",
                       cells=cells, model={"name": "stub"}, timings={"total": 0.01},
                       parts=parts, instances=instances)


class StubPredictor:
    """Deterministic stand-in: ``n_blasts`` blasts, optionally blocking or failing."""

    meta = META
    model_info = {"name": "stub", "backend": "none", "tta": False}

    def __init__(self, n_blasts: int = 0, gate: threading.Event | None = None,
                 error: Exception | None = None) -> None:
        self.n_blasts, self.gate, self.error = n_blasts, gate, error
        self.calls: list[dict] = []

    def predict_image(self, image, name="image", um_per_px=None, cell_diameter_px=None):
        self.calls.append({"name": name, "um_per_px": um_per_px, "cell": cell_diameter_px,
                           "shape": image.shape})
        if self.gate is not None:
            self.gate.wait(10)
        if self.error is not None:
            raise self.error
        return make_result(image, name, self.n_blasts)


def client_for(predictor=None, **settings) -> TestClient:
    app = create_app(predictor or StubPredictor(), **settings)
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture(scope="module")
def tiny_predictor(tmp_path_factory: pytest.TempPathFactory):
    from allseg.inference.predictor import Predictor
    from allseg.models import build_model, save_model_folder

    models = {"segmenter": build_model("unet_small", base_channels=4, depth=3),
              "classifier": build_model("cnn_classifier", width=4)}
    folder = save_model_folder(tmp_path_factory.mktemp("service") / "m", models, META)
    return Predictor(folder, backend="torch")


def test_open_endpoints_docs_and_page():
    client = client_for()
    assert client.get("/healthz").json() == {"status": "ok"}
    model = client.get("/v1/model").json()
    assert model["name"] == "stub" and model["canonical_um_per_px"] == 0.3
    assert model["thresholds"]["blast_probability"] == 0.5
    assert model["classes"]["classifier"] == ["other", "blast"]
    assert model["training"]["classifier"]["best"]["val_auc"] == 0.9
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/predict", "/Inference", "/healthz", "/v1/model"} <= set(paths)
    page = client.get("/")
    assert page.status_code == 200 and "Research use only" in page.text
    assert "Content-Security-Policy" in page.headers
    for asset in ("app.js", "style.css"):
        assert client.get(f"/static/{asset}").status_code == 200
    missing = client.get("/no/such/path")
    assert missing.status_code == 404 and missing.json() == {"detail": "Not Found"}


def test_predict_with_real_model_and_result_downloads(tiny_predictor):
    client = client_for(tiny_predictor)
    reply = client.post("/v1/predict", params={"um_per_px": 0.3, "overlay": "true"},
                        files={"file": ("smear.png", png_bytes(), "image/png")})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    for key in ("image", "width", "height", "um_per_px", "verdict", "blast_count",
                "leukocyte_count", "cells", "model", "disclaimer", "id"):
        assert key in body
    assert (body["image"], body["width"], body["height"]) == ("smear.png", 80, 60)
    assert body["scale_source"] == "user" and body["verdict"] in ("ALL suspected",
                                                                  "no blasts found")
    overlay = Image.open(io.BytesIO(base64.b64decode(body["overlay_png_base64"])))
    assert overlay.width == 80 and overlay.height > 60  # header strip above the image
    rid = body["id"]
    stored = client.get(f"/v1/results/{rid}.json").json()
    assert stored["cells"] == body["cells"] and "overlay_png_base64" not in stored
    assert client.get(f"/v1/results/{rid}.geojson").json()["type"] == "FeatureCollection"
    csv = client.get(f"/v1/results/{rid}.csv")
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.text.splitlines()[0] == ",".join(CSV_COLUMNS)
    assert len(csv.text.splitlines()) == 1 + body["leukocyte_count"]
    png = client.get(f"/v1/results/{rid}/overlay.png")
    assert png.headers["content-type"] == "image/png" and png.content.startswith(b"\x89PNG")
    # Raw bytes work too, without the overlay unless asked for.
    raw = client.post("/v1/predict", content=png_bytes(seed=1),
                      headers={"Content-Type": "image/png"}, params={"um_per_px": 0.3})
    assert raw.status_code == 200 and "overlay_png_base64" not in raw.json()


def test_results_unknown_malformed_and_evicted():
    client = client_for(results_kept=2)
    ids = [client.post("/v1/predict", content=png_bytes()).json()["id"] for _ in range(3)]
    assert client.get(f"/v1/results/{ids[0]}.json").status_code == 404  # evicted
    assert client.get(f"/v1/results/{ids[2]}.csv").status_code == 200
    for bad in ("0" * 32, "nope", "a.b"):
        reply = client.get(f"/v1/results/{bad}.json")
        assert reply.status_code == 404 and "no result" in reply.json()["detail"]
    # The CSV of a prepared result has one row per cell, features filled in.
    rows = client.get(f"/v1/results/{ids[2]}.csv").text.splitlines()
    assert len(rows) == 3 and rows[1].split(",")[CSV_COLUMNS.index("nucleolus_count")] == "1"


def test_query_parameters_reach_the_predictor_and_are_validated():
    stub = StubPredictor()
    client = client_for(stub)
    reply = client.post("/v1/predict", params={"um_per_px": 0.25, "cell_diameter": 40},
                        files={"file": ("a.jpg", jpeg_bytes(), "image/jpeg")})
    assert reply.status_code == 200
    assert stub.calls[-1] == {"name": "a.jpg", "um_per_px": 0.25, "cell": 40.0,
                              "shape": (60, 80, 3)}
    assert client.post("/v1/predict", params={"um_per_px": -1},
                       content=png_bytes()).status_code == 422


@pytest.mark.parametrize(("n_blasts", "diagnosis"), [(2, "Positive"), (0, "Negative")])
def test_legacy_inference_shape(n_blasts: int, diagnosis: str):
    client = client_for(StubPredictor(n_blasts))
    for kwargs in ({"content": jpeg_bytes(), "headers": {"Content-Type": "image/jpeg"}},
                   {"files": {"file": ("x.jpg", jpeg_bytes(), "image/jpeg")}}):
        reply = client.post("/Inference", **kwargs)
        assert reply.status_code == 200
        assert reply.json() == {"Response": "OK",
                                "Message": f"{n_blasts} blasts among {n_blasts + 2} leukocytes",
                                "Diagnosis": diagnosis}


def test_legacy_inference_errors_keep_its_shape():
    client = client_for(max_upload_bytes=1000)
    reply = client.post("/Inference", content=b"hello, this is text")
    assert reply.status_code == 415
    assert reply.json()["Response"] == "FAILED" and "not an image" in reply.json()["Message"]
    reply = client.post("/Inference", content=b"\xff" * 5000)
    assert reply.status_code == 413 and reply.json()["Response"] == "FAILED"


def test_bad_inputs_are_refused_with_clear_messages():
    client = client_for(max_upload_bytes=20_000, max_pixels=10_000)
    too_big = client.post("/v1/predict", content=b"\0" * 200_000)
    assert too_big.status_code == 413 and "limit" in too_big.json()["detail"]

    def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(20):
            yield b"\0" * 10_000

    assert client.post("/v1/predict", content=chunks()).status_code == 413
    text = client.post("/v1/predict", files={"file": ("notes.txt", b"just text", "text/plain")})
    assert text.status_code == 415 and "not an image" in text.json()["detail"]
    truncated = client.post("/v1/predict", content=jpeg_bytes()[:300])
    assert truncated.status_code == 422 and "truncated" in truncated.json()["detail"]
    pixels = client.post("/v1/predict", content=jpeg_bytes(200, 100))
    assert pixels.status_code == 413 and "20,000 pixels" in pixels.json()["detail"]
    empty = client.post("/v1/predict", content=b"")
    assert empty.status_code == 400 and "empty" in empty.json()["detail"]
    no_file = client.post("/v1/predict", files={"other": ("a.png", png_bytes(), "image/png")})
    assert no_file.status_code == 422 and "'file'" in no_file.json()["detail"]


def test_api_key_header_bearer_and_open_paths():
    client = client_for(api_key="s3cret")
    for path in ("/healthz", "/", "/static/app.js"):
        assert client.get(path).status_code == 200
    for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"},
                    {"Authorization": "Basic s3cret"}):
        reply = client.get("/v1/model", headers=headers)
        assert reply.status_code == 401 and "API key" in reply.json()["detail"]
    assert client.get("/v1/model", headers={"X-API-Key": "s3cret"}).status_code == 200
    assert client.get("/v1/model", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/docs").status_code == 401
    assert client.post("/v1/predict", content=png_bytes()).status_code == 401
    legacy = client.post("/Inference", content=jpeg_bytes())
    assert legacy.status_code == 401 and legacy.json()["Response"] == "FAILED"
    good = client.post("/v1/predict", content=png_bytes(), headers={"X-API-Key": "s3cret"})
    assert good.status_code == 200
    rid = good.json()["id"]
    assert client.get(f"/v1/results/{rid}.json").status_code == 401
    assert client.get(f"/v1/results/{rid}.json",
                      headers={"X-API-Key": "s3cret"}).status_code == 200


def test_failed_auth_is_rate_limited_per_client():
    client = client_for(api_key="k")
    codes = [client.get("/v1/model", headers={"X-API-Key": "x"}).status_code
             for _ in range(11)]
    assert codes == [401] * 10 + [429]
    blocked = client.get("/v1/model", headers={"X-API-Key": "k"})
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) >= 1
    assert client.get("/healthz").status_code == 200
    now = [0.0]
    limiter = FailureLimiter(limit=2, window_s=60, clock=lambda: now[0])
    limiter.record("a")
    limiter.record("a")
    assert limiter.retry_after("a") > 0 and limiter.retry_after("b") == 0
    now[0] = 61.0
    assert limiter.retry_after("a") == 0


def test_queue_full_answers_503_and_timeout_504():
    gate = threading.Event()
    app = create_app(StubPredictor(gate=gate), max_queue=2)
    statuses: list[int] = []
    with TestClient(app) as client:
        def post() -> None:
            statuses.append(client.post("/v1/predict", content=png_bytes()).status_code)

        threads = [threading.Thread(target=post) for _ in range(2)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while app.state.queue.busy < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        full = client.post("/v1/predict", content=png_bytes())
        assert full.status_code == 503 and "busy" in full.json()["detail"]
        assert client.get("/healthz").status_code == 200  # the loop itself is not blocked
        gate.set()
        for thread in threads:
            thread.join(10)
    assert statuses == [200, 200] and app.state.queue.busy == 0

    slow = threading.Event()
    app = create_app(StubPredictor(gate=slow), request_timeout_s=0.2)
    with TestClient(app) as client:
        reply = client.post("/Inference", content=jpeg_bytes())
        assert reply.status_code == 504 and reply.json()["Response"] == "FAILED"
        slow.set()


def test_unexpected_error_gives_generic_500_without_traceback(caplog):
    client = client_for(StubPredictor(error=RuntimeError("secret internal detail")))
    reply = client.post("/v1/predict", content=png_bytes())
    assert reply.status_code == 500
    body = reply.json()
    assert body["error_id"] in body["detail"] and "internal server error" in body["detail"]
    assert "Traceback" not in reply.text and "secret" not in reply.text
    assert "secret internal detail" in caplog.text  # the trace stays in the server log
    legacy = client.post("/Inference", content=png_bytes())
    assert legacy.status_code == 500 and legacy.json()["Response"] == "FAILED"


def test_cors_is_off_unless_origins_are_given():
    preflight = {"Origin": "https://example.org", "Access-Control-Request-Method": "POST"}
    off = client_for().options("/v1/predict", headers=preflight)
    assert "access-control-allow-origin" not in off.headers
    on = client_for(cors_origins=["https://example.org"], api_key="k")
    reply = on.options("/v1/predict", headers=preflight)
    assert reply.headers["access-control-allow-origin"] == "https://example.org"


def test_static_folder_is_complete():
    static = Path(__file__).parents[1] / "src" / "allseg" / "service" / "static"
    js = (static / "app.js").read_text()
    assert len(js.splitlines()) < 250 and "http://" not in js.replace(
        "http://www.w3.org/2000/svg", "")
    html = (static / "index.html").read_text()
    assert "https://" not in html and "X-API-Key" in js and "sessionStorage" in js
