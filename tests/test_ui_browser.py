"""The web UI in a real browser: headless Chromium (Debian's, `make setup` installs it) drives the
page served on 127.0.0.1 with the embedded model. Upload a red circle, invert it, edit it to green
and to blue (both edits reuse the inversion), read the result image back from the page, and see
a text file uploaded as an image refused in the page. With UNSAMPLE_UI_SCREENSHOT=1 it saves the page as docs/img/ui.png."""

from __future__ import annotations

import io
import re
import socket
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from unsample.editing.spec import EditSpec

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
DOCS_SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "img" / "ui.png"
"""Rewritten only when UNSAMPLE_UI_SCREENSHOT=1 (how docs/img/ui.png is made); otherwise the
screenshot goes to the test's temporary folder, so a test run leaves the tree clean."""
SOURCE = "a large red circle on a plain gray background"
STEPS = 20
TIMEOUT_MS = 60_000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.model,  # the page serves the embedded model
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"no Chromium at {CHROMIUM}: 'make setup' installs it "
                       "(apt-get install -y chromium); playwright cannot download its own browser here"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.queueing"),  # its pandas calls, on pandas 3
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(embedded_model, tmp_path_factory: pytest.TempPathFactory,
           declared_scene_entry_points: list[EntryPoint]) -> Iterator[str]:
    from unsample.ui.app import build_app, close_app, gradio_cache_in, launch
    from unsample.ui.scenes import installed_scenes

    workdir = tmp_path_factory.mktemp("ui-server")
    with gradio_cache_in(workdir / "uploads"):  # as `serve` does: gradio's cache goes with the app's folder
        # the scenes pyproject.toml declares (the shapes world's, which suggests the source prompt)
        app = build_app(embedded_model, workdir=workdir, scenes=installed_scenes(declared_scene_entry_points))
        url = launch(app, "127.0.0.1", _free_port(), block=False, quiet=True)
        assert url.startswith("http://127.0.0.1:")
        yield url
        close_app(app)
    assert not workdir.exists()  # uploads and outputs removed when the app stops


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture()
def page(browser: Any, server: str) -> Iterator[Any]:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server)
    page.wait_for_selector("#invert")
    yield page
    page.close()


@pytest.fixture(scope="module")
def red_circle_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in scene, centred: the circle covers the image's centre."""
    from unsample_lab.shapes import Scene, SceneObject, render

    scene = Scene((SceneObject("large", "red", "circle", 0.5, 0.5),), "gray", "plain")
    path = tmp_path_factory.mktemp("scene") / "red-circle.png"
    Image.fromarray(render(scene, size=64).image).save(path)
    return path


def _text(page: Any, selector: str) -> str:
    return str(page.locator(selector).inner_text())


def _wait_text(page: Any, selector: str, words: str) -> str:
    page.wait_for_function("([s, w]) => document.querySelector(s).innerText.includes(w)", arg=[selector, words])
    return _text(page, selector)


def _slider_images(page: Any) -> list[np.ndarray]:
    """The before / after images of the slider, fetched from their src URLs."""
    sources = page.eval_on_selector_all("#result img", "els => els.map(e => e.src)")
    assert len(sources) == 2, sources
    return [np.asarray(Image.open(io.BytesIO(page.request.get(src).body())).convert("RGB")) for src in sources]


def _centre(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    return image[h // 2 - 8:h // 2 + 8, w // 2 - 8:w // 2 + 8].reshape(-1, 3).mean(axis=0)


def _check_inversion_download(page: Any, folder: Path) -> None:
    """The inversion offered for download loads back as an `Inversion` (for the CLI or Python)."""
    import unsample

    links = page.eval_on_selector_all("#inversion-file a[href]", "els => els.map(e => e.href)")
    files = [link for link in links if link.endswith(".safetensors")]
    assert len(files) == 1, links
    path = folder / "downloaded.safetensors"
    path.write_bytes(page.request.get(files[0]).body())
    inv = unsample.Inversion.load(path)
    assert (inv.method, inv.steps, inv.prompt) == ("edict", STEPS, SOURCE)


def _edit(page: Any, target: str, number: int) -> str:
    page.locator("#target-prompt textarea").fill(target)
    page.locator("#edit").click()
    return _wait_text(page, "#edit-cost", f"edit {number} of this inversion")


def test_invert_then_edit_twice_reusing_the_inversion(page: Any, red_circle_png: Path, tmp_path: Path) -> None:
    page.locator("#upload input[type=file]").set_input_files(str(red_circle_png))
    # the embedded model's page offers the detected scene's caption as the source prompt
    page.wait_for_function("document.querySelector('#source-prompt textarea').value.length > 0")
    assert page.locator("#source-prompt textarea").input_value() == SOURCE
    page.locator("#steps input").fill(str(STEPS))
    page.locator("#invert").click()
    inverted = _wait_text(page, "#invert-cost", "PSNR")
    assert f"edict, {STEPS} steps" in inverted and f"NFE {2 * STEPS} " in inverted  # EDICT: 2 evaluations a step
    _check_inversion_download(page, tmp_path)

    green = _edit(page, "a large green circle on a plain gray background", 1)
    assert "inversion reused" in green and "inverted first" not in green
    before, after = _slider_images(page)
    r, g, b = _centre(before)
    assert r > g + 100 and r > b + 100, (r, g, b)  # the input: red
    r, g, b = _centre(after)
    assert g > r + 60 and g > b + 60, (r, g, b)  # the edit: green
    assert ".png" in _text(page, "#downloads") and ".json" in _text(page, "#downloads")
    import os

    shot = DOCS_SCREENSHOT if os.environ.get("UNSAMPLE_UI_SCREENSHOT") == "1" else tmp_path / "ui.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000

    blue = _edit(page, "a large blue circle on a plain gray background", 2)
    assert "inversion reused (no new model calls)" in blue and "inverted first" not in blue
    nfe = {name: int(re.search(r"NFE (\d+)", text).group(1)) for name, text in (("green", green), ("blue", blue))}
    if "tried " not in green and "tried " not in blue:  # one recipe each (the ladder names what it tried)
        assert nfe["blue"] == nfe["green"]  # the edit's own evaluations only, as the first edit's
    assert nfe["blue"] <= EditSpec().budget  # never the inversion's cost on top of the rungs' budget
    r, g, b = _centre(_slider_images(page)[1])
    assert b > r + 60 and b > g + 30, (r, g, b)
    print(f"\npage reports: {inverted}\n  {green}\n  {blue}")


def test_a_text_file_uploaded_as_an_image_gets_a_message_in_the_page(page: Any, tmp_path: Path) -> None:
    notes = tmp_path / "notes.png"
    notes.write_text("just some text, not a picture\n")
    page.locator("#upload input[type=file]").set_input_files(str(notes))
    status = _wait_text(page, "#status", "Error")
    assert "'notes.png' is not an image this page can read" in status and "Traceback" not in status
    page.locator("#invert").click()  # and nothing was taken as the input
    assert "upload an image or pick a built-in scene first" in _wait_text(page, "#status", "first")
