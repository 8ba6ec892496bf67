"""Loopback load test of the allseg service (``POST /v1/predict`` or ``/Inference``).

Starts the server itself in a subprocess on a free loopback port, sends
``--requests`` uploads of one synthetic smear image from ``--clients`` concurrent
threads (bounded by count and by ``--time-limit``), then reports status-code counts,
p50/p95 latency and the server's peak RSS. Exits 1 if any response was a 5xx or a
request failed. Only loopback hosts are accepted: this never loads another machine.

    .venv/bin/python bench/load.py                          # 200 requests, 16 clients
    .venv/bin/python bench/load.py --requests 20 --clients 4 --out load.json

The server's queue bound defaults to the number of clients, so a correct server
answers every request; pass a smaller ``--max-queue`` to watch 503s under overload.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

LOOPBACK = ("127.0.0.1", "localhost", "::1")
SERVER = """
import sys, uvicorn
from allseg.inference.predictor import Predictor
from allseg.service import create_app
model, backend, host, port, max_queue = sys.argv[1:6]
app = create_app(Predictor(model, backend=backend), max_queue=int(max_queue))
uvicorn.run(app, host=host, port=int(port), log_level="warning")
"""


def free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def synthetic_jpeg(height: int, width: int, seed: int = 3) -> bytes:
    from PIL import Image

    from allseg.synth import generate_field

    field = generate_field(np.random.default_rng(seed), height, width, 0.1)
    buffer = io.BytesIO()
    Image.fromarray(field.image).save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def peak_rss_mb(pid: int) -> float | None:
    """Peak resident memory of ``pid`` in MiB: Linux's ``VmHWM`` high-water mark, else
    psutil (``peak_wset`` on Windows, the current RSS elsewhere), else None."""
    status = Path(f"/proc/{pid}/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    try:
        import psutil

        info = psutil.Process(pid).memory_info()
        return (getattr(info, "peak_wset", None) or info.rss) / 2**20
    except Exception:
        return None


def start_server(args: argparse.Namespace, port: int, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-c", SERVER, args.model, args.backend, args.host, str(port),
               str(args.max_queue or args.clients)]
    with log.open("wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)


def wait_ready(base: str, server: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"server exited with code {server.returncode}")
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"server not ready after {timeout_s:.0f} s")


def run_load(base: str, payload: bytes, args: argparse.Namespace) -> dict:
    path = "/Inference" if args.endpoint == "legacy" else "/v1/predict"
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    lock = threading.Lock()
    issued = 0
    started = time.monotonic()
    deadline = started + args.time_limit

    def take() -> bool:
        nonlocal issued
        with lock:
            if issued >= args.requests or time.monotonic() >= deadline:
                return False
            issued += 1
            return True

    def worker(client: httpx.Client) -> None:
        while take():
            t0 = time.monotonic()
            try:
                reply = client.post(path, content=payload,
                                    headers={"Content-Type": "image/jpeg"},
                                    timeout=max(1.0, deadline - t0 + 5))
                key = str(reply.status_code)
            except httpx.HTTPError as exc:
                key = f"error:{type(exc).__name__}"
            with lock:
                statuses[key] += 1
                latencies.append(time.monotonic() - t0)

    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    with httpx.Client(base_url=base, limits=limits) as client:
        threads = [threading.Thread(target=worker, args=(client,)) for _ in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    wall = time.monotonic() - started
    lat = np.array(latencies) if latencies else np.zeros(1)
    return {"endpoint": path, "requests": len(latencies), "clients": args.clients,
            "wall_s": round(wall, 2), "throughput_rps": round(len(latencies) / wall, 2),
            "status_counts": dict(sorted(statuses.items())),
            "latency_s": {"p50": round(float(np.percentile(lat, 50)), 3),
                          "p95": round(float(np.percentile(lat, 95)), 3),
                          "max": round(float(lat.max()), 3)},
            "stopped_by_time_limit": len(latencies) < args.requests}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--time-limit", type=float, default=600.0,
                        help="stop issuing requests after this many seconds")
    parser.add_argument("--height", type=int, default=600)
    parser.add_argument("--width", type=int, default=800)
    parser.add_argument("--endpoint", choices=("predict", "legacy"), default="predict")
    parser.add_argument("--host", default="127.0.0.1", help="loopback only")
    parser.add_argument("--model", default="default")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--max-queue", type=int, default=0,
                        help="server queue bound (default: the number of clients)")
    parser.add_argument("--startup-timeout", type=float, default=180.0)
    parser.add_argument("--out", type=Path, help="also write the report as JSON here")
    args = parser.parse_args(argv)
    if args.host not in LOOPBACK:
        parser.error(f"refusing host {args.host!r}: this load test only targets loopback "
                     f"({', '.join(LOOPBACK)})")
    if args.requests < 1 or args.clients < 1:
        parser.error("--requests and --clients must be at least 1")

    payload = synthetic_jpeg(args.height, args.width)
    port = free_port(args.host)
    host_in_url = f"[{args.host}]" if ":" in args.host else args.host
    base = f"http://{host_in_url}:{port}"
    log = Path(tempfile.mkstemp(prefix="allseg-load-", suffix=".log")[1])
    server = start_server(args, port, log)
    try:
        wait_ready(base, server, args.startup_timeout)
        report = run_load(base, payload, args)
        report["server_peak_rss_mb"] = (round(rss, 1) if (rss := peak_rss_mb(server.pid))
                                        is not None else None)
    except RuntimeError as exc:
        print(f"load test failed: {exc}\n--- server log ---\n{log.read_text()[-4000:]}",
              file=sys.stderr)
        return 1
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
    report.update({"image": f"{args.width}x{args.height} JPEG, {len(payload):,} bytes",
                   "model": args.model, "backend": args.backend, "cpus": os.cpu_count()})
    failures = sum(n for code, n in report["status_counts"].items()
                   if code.startswith("5") or code.startswith("error"))
    report["ok"] = failures == 0
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    log.unlink(missing_ok=True)
    if failures:
        print(f"FAIL: {failures} responses were 5xx or failed requests", file=sys.stderr)
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
