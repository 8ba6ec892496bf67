"""Request guards for the service: API key, failed-auth rate limit, body size limit.

All three are plain ASGI middlewares so they act before a request body is read:
an unauthenticated or oversized upload is refused without buffering it.
"""

from __future__ import annotations

import hmac
import json
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Paths anyone may fetch even when an API key is set (the page itself and liveness).
OPEN_PATHS = frozenset({"/", "/healthz", "/favicon.ico"})
OPEN_PREFIXES = ("/static/",)
#: The original project's endpoint; its clients expect errors in its own JSON shape.
LEGACY_PATH = "/Inference"


def error_body(path: str, message: str) -> dict[str, Any]:
    """The JSON error body for ``path``: the legacy shape on ``/Inference``, else
    FastAPI's ``{"detail": ...}``."""
    if path.rstrip("/") == LEGACY_PATH:
        return {"Response": "FAILED", "Message": message, "Diagnosis": None}
    return {"detail": message}


async def send_json(send: Send, status: int, body: dict[str, Any],
                    headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """Send a complete JSON response straight from a middleware."""
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(payload)).encode()), *headers]})
    await send({"type": "http.response.body", "body": payload})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def presented_key(scope: Scope) -> str | None:
    """The key from ``X-API-Key`` or ``Authorization: Bearer KEY``, if any."""
    key = _header(scope, b"x-api-key")
    if key:
        return key.strip()
    auth = _header(scope, b"authorization")
    if auth and auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return None


def key_matches(presented: str | None, expected: str) -> bool:
    """Constant-time comparison (no early exit that would leak the key's prefix)."""
    if presented is None:
        return False
    return hmac.compare_digest(presented.encode(), expected.encode())


class FailureLimiter:
    """At most ``limit`` failed attempts per client per ``window_s``; memory stays
    bounded by forgetting the least recently seen clients beyond ``max_clients``."""

    def __init__(self, limit: int = 10, window_s: float = 60.0, max_clients: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window_s, self.clock = limit, window_s, clock
        self.max_clients = max_clients
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float]:
        times = self._failures.get(client, deque())
        while times and now - times[0] > self.window_s:
            times.popleft()
        return times

    def retry_after(self, client: str) -> int:
        """Seconds until ``client`` may try again; 0 when it is not blocked."""
        with self._lock:
            now = self.clock()
            times = self._recent(client, now)
            if len(times) < self.limit:
                return 0
            return max(1, int(self.window_s - (now - times[0])) + 1)

    def record(self, client: str) -> None:
        with self._lock:
            now = self.clock()
            times = self._recent(client, now)
            times.append(now)
            self._failures[client] = times
            self._failures.move_to_end(client)
            while len(self._failures) > self.max_clients:
                self._failures.popitem(last=False)


class APIKeyMiddleware:
    """Require the API key on every path but :data:`OPEN_PATHS` and static files:
    401 without it, 429 once a client has failed too often."""

    def __init__(self, app: ASGIApp, api_key: str, limiter: FailureLimiter | None = None) -> None:
        if not api_key:
            raise ValueError("api_key must be a non-empty string")
        self.app, self.api_key = app, api_key
        self.limiter = limiter or FailureLimiter()

    @staticmethod
    def is_open(path: str) -> bool:
        return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        # CORS preflights carry no credentials by design; CORSMiddleware (outside) answers them.
        if scope["type"] != "http" or self.is_open(path) or scope.get("method") == "OPTIONS":
            await self.app(scope, receive, send)
            return
        client = (scope.get("client") or ("unknown", 0))[0]
        wait = self.limiter.retry_after(client)
        if wait:
            await send_json(send, 429, error_body(path, "too many failed authentication "
                                                  f"attempts; retry in {wait} s"),
                            [(b"retry-after", str(wait).encode())])
            return
        if not key_matches(presented_key(scope), self.api_key):
            self.limiter.record(client)
            await send_json(send, 401, error_body(
                path, "missing or wrong API key: send it as 'X-API-Key: KEY' or "
                "'Authorization: Bearer KEY'"), [(b"www-authenticate", b"Bearer")])
            return
        await self.app(scope, receive, send)


class UploadTooLarge(Exception):
    """The request body is over the limit (raised while it is being read)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"upload exceeds the limit of {limit:,} bytes")


class BodySizeLimitMiddleware:
    """413 when ``Content-Length`` is over ``max_bytes``; a body sent without one (or
    lying about it) raises :class:`UploadTooLarge` as soon as it passes the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _header(scope, b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_bytes
            except ValueError:
                await send_json(send, 400, error_body(scope["path"], "bad Content-Length"))
                return
            if too_big:
                await send_json(send, 413, error_body(scope["path"],
                                                      str(UploadTooLarge(self.max_bytes))))
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise UploadTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited_receive, send)
