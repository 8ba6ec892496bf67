"""The HTTP service: one shared :class:`~allseg.inference.predictor.Predictor` behind
``POST /v1/predict``, the original project's ``POST /Inference``, result downloads
and a small web page.

Inference runs in a thread pool behind a bounded queue: once ``max_queue`` requests
are waiting or running, new ones get 503 at once instead of piling up in memory.
A request that takes longer than ``request_timeout_s`` gets 504 (its job still
finishes in the background and keeps its queue slot until then, so the bound holds).

Run it with :func:`serve` (``allseg serve``), or ``uvicorn --factory
allseg.service.app:app_from_env`` with the ``ALLSEG_*`` variables of
:func:`app_from_env`.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import io
import json
import logging
import os
import re
import tempfile
import threading
import uuid
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image, ImageOps, UnidentifiedImageError
from starlette.exceptions import HTTPException as StarletteHTTPException

from allseg import DISCLAIMER, __version__
from allseg.errors import ImageReadError
from allseg.io.atomic import encode_image
from allseg.io.images import DECODE_ERRORS, is_deep_colour, pil_to_rgb, read_image
from allseg.outputs.geojson import to_geojson
from allseg.outputs.overlay import draw_overlay
from allseg.outputs.schema import ALL_SUSPECTED, ImageResult
from allseg.outputs.writers import cells_csv, csv_rows
from allseg.service.security import (
    LEGACY_PATH,
    APIKeyMiddleware,
    BodySizeLimitMiddleware,
    UploadTooLarge,
    error_body,
    send_json,
)

log = logging.getLogger("allseg.service")

STATIC_DIR = Path(__file__).parent / "static"
#: Room for multipart framing on top of the file itself.
MULTIPART_SLACK = 64 * 1024
RESULTS_KEPT = 32
LOOPBACK = ("127.0.0.1", "localhost", "::1")
_ID = re.compile(r"[0-9a-f]{32}")
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_UPLOAD_DOC = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary"}}}},
    "image/*": {"schema": {"type": "string", "format": "binary"}}}}}


class ServiceError(Exception):
    """A request that cannot be served, with the HTTP status and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        self.status, self.message = status, message
        super().__init__(message)


# ---------------------------------------------------------------- decoding uploads


def _decode_as_file(data: bytes, max_pixels: int, kind: str) -> np.ndarray:
    """Uploads Pillow cannot decode fully (TIFF variants, 16-bit colour) go through
    :func:`read_image`'s own paths (tifffile, OpenCV), from a temporary file."""
    with tempfile.NamedTemporaryFile(suffix=f".{kind.lower()}") as tmp:
        tmp.write(data)
        tmp.flush()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return read_image(tmp.name, max_pixels)
        except ImageReadError as exc:
            status = 413 if "exceeds the limit" in exc.problem else 422
            raise ServiceError(status, f"unreadable {kind}: {exc.problem}") from exc


def decode_image_bytes(data: bytes, max_pixels: int) -> np.ndarray:
    """Uploaded bytes -> ``(H, W, 3)`` RGB ``uint8``, with :func:`read_image`'s rules
    (pixel limit before decoding, EXIF orientation, mode conversion, first page).

    Raises :class:`ServiceError`: 400 empty, 413 too many pixels, 415 not an image,
    422 corrupt or truncated.
    """
    if not data:
        raise ServiceError(400, "empty upload: no image bytes were received")
    is_tiff = data[:4] in _TIFF_MAGIC
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            if w * h > max_pixels:
                raise ServiceError(413, f"image is {w}x{h} = {w * h:,} pixels, over the "
                                   f"limit of {max_pixels:,} pixels")
            if w < 1 or h < 1:
                raise ServiceError(422, f"empty image ({w}x{h})")
            if is_deep_colour(img, data):
                return _decode_as_file(data, max_pixels, str(img.format))
            img.load()
            return pil_to_rgb(ImageOps.exif_transpose(img))
    except ServiceError:
        raise
    except Image.DecompressionBombError as exc:
        raise ServiceError(413, f"image refused as a decompression bomb ({exc})") from exc
    except UnidentifiedImageError as exc:
        if is_tiff:
            return _decode_as_file(data, max_pixels, "TIFF")
        raise ServiceError(415, "not an image: the upload is not in a format Pillow can "
                           "identify (send JPEG, PNG, TIFF or BMP)") from exc
    except DECODE_ERRORS as exc:
        if is_tiff:
            return _decode_as_file(data, max_pixels, "TIFF")
        raise ServiceError(422, f"corrupt or truncated image: {exc}") from exc


# ---------------------------------------------------------------- results


def csv_text(result: ImageResult) -> str:
    """``cells.csv`` of one image (the same file ``allseg predict`` writes for a run)."""
    return cells_csv(csv_rows(result.to_json()))


@dataclass
class StoredResult:
    """What the results endpoints serve; masks and the image itself are not kept."""

    json: dict[str, Any]
    overlay_png: bytes
    geojson: dict[str, Any]
    csv: str


class ResultStore:
    """The last ``capacity`` results, least recently used evicted first."""

    def __init__(self, capacity: int = RESULTS_KEPT) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, StoredResult] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, key: str, item: StoredResult) -> None:
        with self._lock:
            self._items[key] = item
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def get(self, key: str) -> StoredResult | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def __len__(self) -> int:
        return len(self._items)


# ---------------------------------------------------------------- the bounded queue


class InferenceQueue:
    """At most ``max_queue`` jobs waiting or running; the rest are refused (503)."""

    def __init__(self, max_queue: int, threads: int = 1) -> None:
        self.max_queue = max_queue
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="allseg-inference")
        self._busy = 0
        self._lock = threading.Lock()

    @property
    def busy(self) -> int:
        return self._busy

    def try_acquire(self) -> bool:
        with self._lock:
            if self._busy >= self.max_queue:
                return False
            self._busy += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._busy -= 1

    async def run(self, job: Callable[[], Any], timeout_s: float) -> Any:
        """Run ``job`` on a slot already acquired; the slot is freed when the job ends,
        even after a timeout."""
        try:
            future = self.executor.submit(job)
        except BaseException:
            self.release()
            raise
        future.add_done_callback(lambda _: self.release())
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), max(0.001, timeout_s))
        except TimeoutError:
            raise ServiceError(504, f"inference did not finish within {timeout_s:.0f} s; "
                               "try a smaller image or retry later") from None


# ---------------------------------------------------------------- middleware and errors


class CatchAllMiddleware:
    """Any unhandled exception: log the trace with an error id, answer a generic 500."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            error_id = uuid.uuid4().hex[:12]
            log.exception("error id %s on %s %s", error_id, scope.get("method"),
                          scope.get("path"))
            if not started:
                body = error_body(scope.get("path", ""),
                                  f"internal server error (error id {error_id})")
                await send_json(send, 500, {**body, "error_id": error_id})


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _json_response(body: Any, status: int = 200, media_type: str = "application/json",
                   headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body, default=_json_default, ensure_ascii=False),
                    status_code=status, media_type=media_type, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    async def service_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ServiceError)
        return JSONResponse(error_body(request.url.path, exc.message), exc.status)

    async def too_large(request: Request, exc: Exception) -> Response:
        return JSONResponse(error_body(request.url.path, str(exc)), 413)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return JSONResponse(error_body(request.url.path, str(exc.detail)), exc.status_code,
                            headers=exc.headers)

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        if request.url.path.rstrip("/") != LEGACY_PATH:
            return await request_validation_exception_handler(request, exc)
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                             for e in exc.errors())
        return JSONResponse(error_body(request.url.path, f"invalid request: {problems}"), 422)

    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(UploadTooLarge, too_large)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)


# ---------------------------------------------------------------- the app


async def _read_upload(request: Request, max_bytes: int) -> tuple[bytes, str]:
    """The image bytes and a name: multipart field ``file``, else the raw body.

    The body size limit is enforced while reading (:class:`BodySizeLimitMiddleware`);
    the content decides whether it is an image, not the declared Content-Type.
    """
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        async with request.form(max_files=1, max_fields=8) as form:
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise ServiceError(422, "multipart upload has no file in a field named 'file'")
            data = await upload.read(max_bytes + 1)
            name = Path(upload.filename or "upload").name
    else:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise UploadTooLarge(max_bytes)
            chunks.append(chunk)
        data, name = b"".join(chunks), "upload"
    if len(data) > max_bytes:
        raise UploadTooLarge(max_bytes)
    return data, name


def model_summary(predictor: Any) -> dict[str, Any]:
    """``GET /v1/model``: what is loaded and how it was trained."""
    meta, info = predictor.meta, predictor.model_info
    return {"name": info.get("name"), "version": meta.get("allseg_version"),
            "allseg_version": __version__, "backend": info.get("backend"),
            "tta": info.get("tta"), "classes": meta.get("classes"),
            "canonical_um_per_px": meta.get("canonical_um_per_px"),
            "thresholds": meta.get("thresholds"), "training": meta.get("training", {}),
            "disclaimer": DISCLAIMER}


def create_app(predictor: Any, api_key: str | None = None, max_upload_bytes: int = 30_000_000,
               max_pixels: int = 60_000_000, max_queue: int = 8,
               request_timeout_s: float = 120.0, cors_origins: Iterable[str] = (),
               inference_threads: int = 1, results_kept: int = RESULTS_KEPT) -> FastAPI:
    """The FastAPI app around one loaded predictor (see the module docstring).

    ``predictor`` needs ``predict_image(image, name, um_per_px, cell_diameter_px)``,
    ``meta`` and ``model_info``. With ``api_key`` every path but ``/``, ``/healthz``
    and ``/static/*`` requires it. CORS is off unless ``cors_origins`` is given.
    """
    app = FastAPI(title="allseg", version=__version__,
                  description="Leukocyte segmentation and lymphoblast flagging in blood "
                  f"smear images. {DISCLAIMER}")
    queue = InferenceQueue(max_queue, inference_threads)
    store = ResultStore(results_kept)
    app.state.predictor, app.state.queue, app.state.results = predictor, queue, store

    def analyse(data: bytes, name: str, um_per_px: float | None,
                cell_diameter: float | None, keep: bool) -> tuple[ImageResult, str | None]:
        """Worker thread: decode, predict and (for ``keep``) render every download."""
        image = decode_image_bytes(data, max_pixels)
        result = predictor.predict_image(image, name, um_per_px=um_per_px,
                                         cell_diameter_px=cell_diameter)
        if not keep:
            return result, None
        key = uuid.uuid4().hex
        store.put(key, StoredResult(json=result.to_json(),
                                    overlay_png=encode_image(draw_overlay(image, result), ".png"),
                                    geojson=to_geojson(result), csv=csv_text(result)))
        return result, key

    async def run_analysis(request: Request, um_per_px: float | None,
                           cell_diameter: float | None, keep: bool
                           ) -> tuple[ImageResult, str | None]:
        if not queue.try_acquire():
            raise ServiceError(503, f"server busy: {max_queue} requests are already queued "
                               "or running; retry in a few seconds")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + request_timeout_s
        try:
            data, name = await asyncio.wait_for(_read_upload(request, max_upload_bytes),
                                                request_timeout_s)
        except TimeoutError:
            queue.release()
            raise ServiceError(408, "upload not received within the request time limit") \
                from None
        except BaseException:
            queue.release()
            raise
        job = functools.partial(analyse, data, name, um_per_px, cell_diameter, keep)
        del data
        return await queue.run(job, deadline - loop.time())

    @app.get("/healthz", tags=["service"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/model", tags=["service"])
    async def model() -> dict[str, Any]:
        return model_summary(predictor)

    @app.post("/v1/predict", tags=["predict"], openapi_extra=_UPLOAD_DOC)
    async def predict(request: Request,
                      um_per_px: float | None = Query(None, gt=0, le=100,
                                                      description="scale override, µm/px"),
                      cell_diameter: float | None = Query(
                          None, gt=0, le=10_000, description="typical leukocyte diameter, px"),
                      overlay: bool = Query(False, description="add overlay_png_base64")
                      ) -> Response:
        """Segment and classify one image (multipart ``file`` or raw image bytes).

        Returns the output-contract JSON plus ``id``; downloads stay available under
        ``/v1/results/{id}...`` for the last few results.
        """
        result, key = await run_analysis(request, um_per_px, cell_diameter, keep=True)
        assert key is not None
        body = {**result.to_json(), "id": key,
                "links": {kind: f"/v1/results/{key}{suffix}" for kind, suffix in
                          (("json", ".json"), ("geojson", ".geojson"), ("csv", ".csv"),
                           ("overlay", "/overlay.png"))}}
        if overlay:
            stored = store.get(key)
            if stored is not None:
                body["overlay_png_base64"] = base64.b64encode(stored.overlay_png).decode()
        return _json_response(body)

    @app.post(LEGACY_PATH, tags=["legacy"], openapi_extra=_UPLOAD_DOC)
    async def legacy_inference(request: Request) -> dict[str, Any]:
        """The original project's endpoint: JPEG bytes in, a one-line verdict out."""
        result, _ = await run_analysis(request, None, None, keep=False)
        return {"Response": "OK",
                "Message": f"{result.blast_count} blasts among {result.leukocyte_count} "
                           "leukocytes",
                "Diagnosis": "Positive" if result.verdict == ALL_SUSPECTED else "Negative"}

    def stored(result_id: str) -> StoredResult:
        item = store.get(result_id) if _ID.fullmatch(result_id) else None
        if item is None:
            raise ServiceError(404, f"no result {result_id!r}: unknown, or evicted after "
                               f"{store.capacity} newer results")
        return item

    @app.get("/v1/results/{result_id}.json", tags=["results"])
    async def result_json(result_id: str) -> Response:
        return _json_response(stored(result_id).json)

    @app.get("/v1/results/{result_id}.geojson", tags=["results"])
    async def result_geojson(result_id: str) -> Response:
        return _json_response(stored(result_id).geojson, media_type="application/geo+json")

    @app.get("/v1/results/{result_id}.csv", tags=["results"])
    async def result_csv(result_id: str) -> Response:
        return Response(stored(result_id).csv, media_type="text/csv; charset=utf-8")

    @app.get("/v1/results/{result_id}/overlay.png", tags=["results"])
    async def result_overlay(result_id: str) -> Response:
        return Response(stored(result_id).overlay_png, media_type="image/png")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={
            "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
                                       "object-src 'none'; frame-ancestors 'none'",
            "X-Content-Type-Options": "nosniff"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    _install_error_handlers(app)
    # Added innermost first: CORS (outermost) > catch-all > API key > body size.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=max_upload_bytes + MULTIPART_SLACK)
    if api_key:
        app.add_middleware(APIKeyMiddleware, api_key=api_key)
    app.add_middleware(CatchAllMiddleware)
    origins = list(cors_origins)
    if origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST"],
                           allow_headers=["X-API-Key", "Authorization", "Content-Type"])
    return app


# ---------------------------------------------------------------- running it

ENV_MODEL, ENV_BACKEND, ENV_API_KEY = "ALLSEG_MODEL", "ALLSEG_BACKEND", "ALLSEG_API_KEY"


def app_from_env() -> FastAPI:
    """App factory for ``uvicorn --factory`` and multi-worker :func:`serve`.

    Reads ``ALLSEG_MODEL`` (default ``default``), ``ALLSEG_BACKEND`` (``auto``) and
    ``ALLSEG_API_KEY`` (unset: no key). Every worker process loads its own predictor.
    """
    from allseg.inference.predictor import Predictor

    predictor = Predictor(os.environ.get(ENV_MODEL, "default"),
                          backend=os.environ.get(ENV_BACKEND, "auto"))
    return create_app(predictor, api_key=os.environ.get(ENV_API_KEY) or None)


def serve(host: str = "127.0.0.1", port: int = 1234, model: str | Path = "default",
          api_key: str | None = None, workers: int = 1, backend: str = "auto") -> None:
    """Load the model once and serve it with uvicorn until interrupted.

    ``api_key`` None reads ``ALLSEG_API_KEY``. With ``workers > 1`` uvicorn starts
    that many processes through :func:`app_from_env`, each with its own model copy,
    queue and result store: a ``/v1/results/{id}`` request may then reach a worker
    that never saw the id (404), so the web page's downloads need ``workers=1``.
    One worker already uses every core for inference.
    """
    import uvicorn

    if api_key is None:
        api_key = os.environ.get(ENV_API_KEY) or None
    if host not in LOOPBACK and not api_key:
        log.warning("serving on %s without an API key: anyone who can reach this port can "
                    "use it (set ALLSEG_API_KEY)", host)
    if workers > 1:
        os.environ[ENV_MODEL], os.environ[ENV_BACKEND] = str(model), backend
        if api_key:
            os.environ[ENV_API_KEY] = api_key
        uvicorn.run("allseg.service.app:app_from_env", factory=True, host=host, port=port,
                    workers=workers)
        return
    from allseg.inference.predictor import Predictor

    uvicorn.run(create_app(Predictor(model, backend=backend), api_key=api_key), host=host,
                port=port)
