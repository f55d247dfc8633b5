"""The web UI in a real browser: headless Chromium (Debian's, `make setup` installs it) drives the
page served on 127.0.0.1 with the embedded model. The simple page: upload a red circle, edit it to
green with the one Edit button (it inverts first) and to blue (reusing the inversion), read the
result images back from the page at the photo's own size, see the check's verdict. The Advanced
section: invert alone, download the inversion, edit it, change the steps and see Edit invert again.
A non-square photo comes back at its own shape and size. A text file uploaded as an image is
refused in the page. With UNSAMPLE_UI_SCREENSHOT=1 it writes docs/img/ui_simple.png and ui_advanced.png."""

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
DOCS_IMG = Path(__file__).resolve().parents[1] / "docs" / "img"
"""The screenshots (ui_simple.png, ui_advanced.png) are written here only when UNSAMPLE_UI_SCREENSHOT=1
(how docs/img's are made); otherwise into the test's temporary folder, so a test run leaves the tree clean."""
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
    page.wait_for_selector("#edit")
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
    """The mean colour of the middle sixteenth of the image's side (4 x 4 pixels of a 64 px image)."""
    h, w = image.shape[:2]
    half = max(2, min(h, w) // 32)
    return image[h // 2 - half:h // 2 + half, w // 2 - half:w // 2 + half].reshape(-1, 3).mean(axis=0)


def _share(image: np.ndarray, colour: str) -> float:
    """The share of the image's pixels that are clearly ``colour`` (red, green or blue): where the
    default edit puts its circle is the model's choice (the ladder may let every cell change)."""
    rgb = image.astype(np.int16)
    channel = "rgb".index(colour[0])
    others = [rgb[..., c] for c in range(3) if c != channel]
    return float(((rgb[..., channel] > others[0] + 60) & (rgb[..., channel] > others[1] + 30)).mean())


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
    """Edit to ``target``; the cost line of this edit (the ``number``-th of its inversion)."""
    page.locator("#target-prompt textarea").fill(target)
    before = _text(page, "#edit-cost")
    page.locator("#edit").click()
    page.wait_for_function("([s, w, old]) => { const t = document.querySelector(s).innerText; "
                           "return t !== old && t.startsWith(w) && !document.querySelector('#edit-verdict .pending'); }",
                           arg=["#edit-cost", f"edit {number} of this inversion", before])
    return _text(page, "#edit-cost")


def _upload(page: Any, png: Path, source: str | None = SOURCE) -> None:
    page.locator("#upload input[type=file]").set_input_files(str(png))
    if source is None:
        _wait_text(page, "#status", png.name)
        return
    # the embedded model's page offers the detected scene's caption as the source prompt
    page.wait_for_function("document.querySelector('#source-prompt textarea').value.length > 0")
    assert page.locator("#source-prompt textarea").input_value() == source


def _natural_sizes(page: Any) -> list[tuple[int, int]]:
    """The slider's images as served (before the browser scales them for the screen)."""
    page.wait_for_function("() => { const els = [...document.querySelectorAll('#result img')]; "
                           "return els.length === 2 && els.every(e => e.complete && e.naturalWidth > 0); }")
    sizes = page.eval_on_selector_all("#result img", "els => els.map(e => [e.naturalWidth, e.naturalHeight])")
    return [(int(w), int(h)) for w, h in sizes]


def _downloaded_png(page: Any) -> Image.Image:
    links = page.eval_on_selector_all("#downloads a[href]", "els => els.map(e => e.href)")
    [png] = [link for link in links if link.split("?")[0].endswith(".png")]
    return Image.open(io.BytesIO(page.request.get(png).body()))


def _screenshot(name: str, folder: Path) -> Path:
    import os

    return DOCS_IMG / name if os.environ.get("UNSAMPLE_UI_SCREENSHOT") == "1" else folder / name


def test_the_simple_page_edits_with_one_button(page: Any, red_circle_png: Path, tmp_path: Path) -> None:
    assert not page.locator("#method").is_visible() and not page.locator("#invert").is_visible()  # in Advanced
    _upload(page, red_circle_png)
    green = _edit(page, "a large green circle on a plain gray background", 1)
    steps = EditSpec().steps
    assert f"inverted first: edict, {steps} steps" in green, green  # the first Edit inverts
    verdict = _text(page, "#edit-verdict")
    assert verdict.startswith(("Check: ", "Warning: ")), verdict  # the edit check's verdict, beside the button
    assert _natural_sizes(page) == [(64, 64), (64, 64)]  # the photo's own size
    before, after = _slider_images(page)
    r, g, b = _centre(before)
    assert r > g + 100 and r > b + 100, (r, g, b)  # the input: red
    assert _share(after, "green") > 0.03 and _share(after, "red") < 0.01, verdict  # the edit: a green circle
    assert ".png" in _text(page, "#downloads") and ".json" in _text(page, "#downloads")
    assert _downloaded_png(page).size == (64, 64)

    blue = _edit(page, "a large blue circle on a plain gray background", 2)
    assert "inversion reused (no new model calls)" in blue and "inverted first" not in blue
    nfe = {name: int(re.search(r"NFE (\d+)", text).group(1)) for name, text in (("green", green), ("blue", blue))}
    verdicts = verdict + _text(page, "#edit-verdict")
    if "tried " not in verdicts:  # one recipe each (the ladder names what it tried)
        assert nfe["blue"] == nfe["green"]  # the edit's own evaluations only, as the first edit's
    assert nfe["blue"] <= EditSpec().budget  # never the inversion's cost on top of the rungs' budget
    assert _share(_slider_images(page)[1], "blue") > 0.03
    print(f"\npage reports: {green}\n  {verdict}\n  {blue}\n  {_text(page, '#edit-verdict')}")


def test_the_advanced_section_inverts_alone_and_a_changed_setting_inverts_again(
        page: Any, red_circle_png: Path, tmp_path: Path) -> None:
    _upload(page, red_circle_png)
    page.locator("#advanced").get_by_text("Advanced:").first.click()
    page.wait_for_selector("#method", state="visible")
    page.locator("#steps input").fill(str(STEPS))
    page.locator("#steps input").press("Tab")  # the value is committed (blur) before the click reads it
    page.locator("#invert").click()
    inverted = _wait_text(page, "#invert-cost", "PSNR")
    assert f"edict, {STEPS} steps" in inverted and f"NFE {2 * STEPS} " in inverted  # EDICT: 2 evaluations a step
    _check_inversion_download(page, tmp_path)
    green = _edit(page, "a large green circle on a plain gray background", 1)
    assert "inversion reused" in green and "inverted first" not in green  # the Invert button's inversion
    shot = _screenshot("ui_advanced.png", tmp_path)
    page.locator("#advanced").screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    page.locator("#steps input").fill(str(STEPS // 2))  # an inversion setting: Edit inverts again
    page.locator("#steps input").press("Tab")
    again = _edit(page, "a large green circle on a plain gray background", 1)
    assert f"inverted first: edict, {STEPS // 2} steps" in again, again
    print(f"\npage reports: {inverted}\n  {green}\n  {again}")


def test_a_non_square_photo_comes_back_at_its_own_shape_and_size(page: Any, red_circle_png: Path, tmp_path: Path) -> None:
    square = Image.open(red_circle_png).convert("RGB")
    wide = Image.new("RGB", (96, 64), square.getpixel((0, 0)))  # 3:2, the circle centred on the scene's gray
    wide.paste(square, (16, 0))
    png = tmp_path / "wide.png"
    wide.save(png)
    _upload(page, png, source=None)
    assert "96 x 64 px" in _text(page, "#status")
    page.locator("#source-prompt textarea").fill(SOURCE)
    cost = _edit(page, "a large green circle on a plain gray background", 1)
    assert "inverted first" in cost
    assert _natural_sizes(page) == [(96, 64), (96, 64)]  # shown at the photo's own shape and size
    assert _downloaded_png(page).size == (96, 64)  # and written so
    assert _share(_slider_images(page)[1], "green") > 0.02
    shot = _screenshot("ui_simple.png", tmp_path)  # the simple page, a 3:2 photo edited at its own size
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def test_a_text_file_uploaded_as_an_image_gets_a_message_in_the_page(page: Any, tmp_path: Path) -> None:
    notes = tmp_path / "notes.png"
    notes.write_text("just some text, not a picture\n")
    page.locator("#upload input[type=file]").set_input_files(str(notes))
    status = _wait_text(page, "#status", "Error")
    assert "'notes.png' is not an image this page can read" in status and "Traceback" not in status
    page.locator("#target-prompt textarea").fill("a large green circle on a plain gray background")
    page.locator("#edit").click()  # and nothing was taken as the input
    assert "upload an image or pick a built-in scene first" in _wait_text(page, "#status", "first")
