"""The web page, driven in headless Chromium against a real server and the bundled model.

Set ``ALLSEG_SAVE_SCREENSHOT=1`` to refresh ``docs/images/web_page.png`` from the run.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking"]
DOCS_SCREENSHOT = Path(__file__).parents[1] / "docs" / "images" / "web_page.png"

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server_url():
    uvicorn = pytest.importorskip("uvicorn")
    from allseg.inference.predictor import Predictor
    from allseg.service import create_app

    app = create_app(Predictor("default", backend="torch"))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed")
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="the playwright Python package is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def smear_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from allseg.synth import generate_field

    field = generate_field(np.random.default_rng(3), 600, 800, 0.1)
    path = tmp_path_factory.mktemp("browser") / "synthetic_smear.png"
    Image.fromarray(field.image).save(path)
    return path


def test_web_page_upload_overlay_table_and_hover(server_url, browser, smear_png, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 1100})
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.goto(server_url)
    assert page.locator("#disclaimer").is_visible()
    assert "Research use only" in page.locator("#disclaimer").inner_text()

    # A text file: the error box names the problem.
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    page.set_input_files("#file", str(notes))
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    assert "not an image" in page.locator("#error").inner_text()
    problems.clear()  # the browser logs the failed request's 415 as a console error

    page.set_input_files("#file", str(smear_png))
    page.wait_for_selector("#result:not([hidden])", timeout=180_000)
    page.wait_for_function("() => { const img = document.getElementById('overlay');"
                           " return img.complete && img.naturalWidth > 0; }")
    assert page.locator("#error").is_hidden()
    verdict = page.locator("#verdict").inner_text()
    assert "ALL suspected" in verdict or "no blasts found" in verdict
    rows = page.locator("#table tbody tr[data-id]")
    polygons = page.locator("#cells polygon")
    assert rows.count() > 0 and polygons.count() == rows.count()
    assert page.locator("#overlay").evaluate("img => img.naturalWidth") == 800

    rows.nth(0).click()
    first_id = rows.nth(0).get_attribute("data-id")
    assert "selected" in page.locator(f'#cells polygon[data-id="{first_id}"]').get_attribute(
        "class")
    assert f"#{first_id}" in page.locator("#details").inner_text()

    page.evaluate("window.scrollTo(0, 0)")  # the sticky disclaimer back at the top
    target = polygons.nth(polygons.count() - 1)
    target.hover()
    tooltip = page.locator("#tooltip")
    tooltip.wait_for(state="visible", timeout=5_000)
    assert "P(blast)" in tooltip.inner_text() and "N:C" in tooltip.inner_text()

    shot = tmp_path / "web_page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("ALLSEG_SAVE_SCREENSHOT") == "1":
        with Image.open(shot) as image:
            scale = min(1.0, 1000 / image.width)
            small = image.convert("RGB").resize(
                (round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
        DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        small.quantize(256).save(DOCS_SCREENSHOT, optimize=True)  # dithered median cut

    with page.expect_download() as info:
        page.locator('.downloads a[data-kind=".csv"]').click()
    assert info.value.suggested_filename == "synthetic_smear.csv"
    assert problems == []
    page.close()
