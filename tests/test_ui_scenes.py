"""The page's built-in scenes come from a provider found through the ``unsample.scenes`` entry point
group (the lab registers the shapes world's); the library never imports the lab. With no provider
the page hides the scene picker and offers no prompt; with one passed in it offers that one's
scenes and prompts. The page's edit controls are made from `EditSpec`'s settings, a built app
carries its own folder (no module state), and building a page writes no environment variable:
only `serve`, the process's entry point, says where gradio keeps its uploads."""

from __future__ import annotations

import ast
import logging
import os
import shutil
import weakref
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from PIL import Image

from unsample.editing.spec import setting_info
from unsample.errors import InputError
from unsample.ui import advanced, scenes, session
from unsample.ui import app as page
from unsample.ui import callbacks as cb
from unsample.ui.session import SessionState
from unsample.ui.settings import CACHE_CLEANUP

SOURCE = "a large red circle on a plain gray background"
LIBRARY = Path(__file__).resolve().parents[1] / "src" / "unsample"


class FakeScenes:
    """A provider of two flat-colour scenes; it suggests its first caption for a green image."""

    captions = ("a green test scene", "a gray test scene")

    def render(self, caption: str, size: int, seed: int = 0) -> Image.Image:
        return Image.new("RGB", (size, size), (20, 200, 40) if "green" in caption else (128, 128, 128))

    def suggest(self, vocabulary: list[str] | None, image: Image.Image) -> str | None:
        green = image.convert("RGB").getpixel((0, 0))[1] > 150  # type: ignore[index]
        return self.captions[0] if vocabulary is not None and green else None


FAKE = FakeScenes()


def _elements(app: Any) -> dict[str, Any]:
    return {block.elem_id: block for block in app.blocks.values() if getattr(block, "elem_id", None)}


def _handlers(app: Any) -> dict[str, Any]:
    return {fn.fn.__name__: fn.fn for fn in app.fns.values()}


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(("GRADIO_", "TRANSFORMERS_"))}


@pytest.fixture(scope="module")
def built(embedded_model, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, dict[str, str], Path]]:
    """A page built with `FAKE` passed in; the environment before it was built; its folder."""
    before = _environment()
    workdir = tmp_path_factory.mktemp("ui-scenes") / "ui"
    app = page.build_app(embedded_model, workdir=workdir, scenes=FAKE)
    yield app, before, workdir
    page.close_app(app)


# ---------------------------------------------------------------- the entry point


def test_the_shapes_scenes_are_found_through_their_declared_entry_point(
        declared_scene_entry_points: list[EntryPoint]) -> None:
    from unsample_lab.ui_scenes import SCENES

    assert [(e.name, e.value) for e in declared_scene_entry_points] == [("shapes", "unsample_lab.ui_scenes:SCENES")]
    provider = scenes.installed_scenes(declared_scene_entry_points)
    assert provider is SCENES and isinstance(provider, scenes.SceneProvider)
    image = provider.render(SOURCE, 64, seed=3)
    assert image.size == (64, 64) and image.mode == "RGB"
    assert provider.suggest(None, image) is None  # an open vocabulary is not the shapes world's
    assert provider.suggest(sorted({w for c in provider.captions for w in c.split()}), image) is None  # nor a part


def test_a_broken_or_foreign_provider_is_skipped_with_its_reason_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    group = scenes.SCENES_GROUP
    entries = [EntryPoint("c-fake", f"{__name__}:FAKE", group), EntryPoint("a-broken", "unsample_no_such_module:X", group),
               EntryPoint("b-foreign", "os:sep", group)]
    with caplog.at_level(logging.ERROR, logger=scenes.log.name):
        assert scenes.installed_scenes(entries) is FAKE  # by name: a-broken, b-foreign skipped, then c-fake
    messages = [r.getMessage() for r in caplog.records if r.name == scenes.log.name]
    assert len(messages) == 2 and "a-broken" in messages[0] and "b-foreign" in messages[1], messages
    assert scenes.installed_scenes([]) is scenes.NO_SCENES


def test_the_library_never_imports_the_lab() -> None:
    for path in LIBRARY.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0] == "unsample_lab" for n in names), f"{path}:{node.lineno} imports the lab"


# ---------------------------------------------------------------- the page with and without a provider


def test_without_a_provider_the_page_has_no_scene_picker_and_offers_no_prompt(
        embedded_model, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from unsample_lab.ui_scenes import SCENES

    monkeypatch.setattr(scenes, "registered_entry_points", list)
    red = SCENES.render(SOURCE, embedded_model.resolution)
    assert cb.suggested_prompt(embedded_model, red) is None
    with pytest.raises(InputError) as err:
        cb.scene_image(SOURCE, 64)
    assert "no built-in scenes are installed" in cb.error_text(err.value) and "\n" not in cb.error_text(err.value)
    png = tmp_path / "red.png"
    red.save(png)
    app = page.build_app(embedded_model, workdir=tmp_path / "ui")
    try:
        picker = _elements(app)["scene"]
        assert picker.visible is False and picker.choices == []
        _, preview, _, prompt, status = _handlers(app)["on_upload"](None, str(png))
        assert preview.size == (256, 256) and not status.startswith("**Error:**")
        assert prompt == {"__type__": "update"} and "detected scene" not in status  # gr.skip(): the prompt is left alone
    finally:
        page.close_app(app)


def test_a_provider_passed_in_gives_the_page_its_scenes_and_prompts(built: tuple[Any, dict[str, str], Path],
                                                                    embedded_model, tmp_path: Path) -> None:
    app, _, _ = built
    picker = _elements(app)["scene"]
    assert picker.visible is not False and [value for _, value in picker.choices] == list(FAKE.captions)
    state, preview, _, prompt, status = _handlers(app)["on_scene"](None, FAKE.captions[0])
    assert prompt == FAKE.captions[0] and preview.size == (256, 256) and "detected scene" in status
    assert isinstance(state, SessionState) and state.image_name == f"scene '{FAKE.captions[0]}'"
    state.close()
    view = cb.set_image(embedded_model, SessionState.create(tmp_path), FAKE.render(FAKE.captions[1], 64), "gray", FAKE)
    assert view.suggestion is None


# ---------------------------------------------------------------- the edit controls: EditSpec's


def test_the_edit_controls_carry_the_specs_defaults_ranges_and_help(built: tuple[Any, dict[str, str], Path]) -> None:
    controls = _elements(built[0])
    for elem_id, name in [("target-prompt", "target_prompt"), ("control", "control"), ("cross-steps", "cross_steps"),
                          ("self-steps", "self_steps"), ("start-step", "start_step"), ("edit-guidance", "guidance")]:
        info = setting_info(name)
        assert controls[elem_id].value == info.default and controls[elem_id].info == info.setting.help, elem_id
    for elem_id, name in [("reweight", "reweight"), ("blend-words", "blend_words")]:
        assert controls[elem_id].info == setting_info(name).setting.help
    for elem_id, name in [("cross-steps", "cross_steps"), ("self-steps", "self_steps")]:
        bounds = setting_info(name).bounds
        assert bounds is not None and (controls[elem_id].minimum, controls[elem_id].maximum) == (bounds.low, bounds.high)
    assert controls["mask-source"].value == cb.DEFAULT_MASK
    assert controls["steps"].value == setting_info("steps").default
    assert controls["inversion-guidance"].value == setting_info("inversion_guidance").default
    assert controls["method"].value == setting_info("method").default
    # every on-page setting without a hand-laid control gets a generated one, from its declaration alone
    generated = advanced.generated_settings()
    assert "check" in [info.name for info in generated]
    for info in generated:
        control = controls["setting-" + info.name.replace("_", "-")]
        assert control.value == info.default and control.info == info.setting.help, info.name


def test_the_simple_page_has_one_edit_button_and_the_lab_bench_is_under_advanced(
        built: tuple[Any, dict[str, str], Path]) -> None:
    controls = _elements(built[0])

    def in_advanced(elem_id: str | Any) -> bool:
        block = (controls[elem_id] if isinstance(elem_id, str) else elem_id).parent
        while block is not None and getattr(block, "elem_id", None) != "advanced":
            block = block.parent
        return block is not None

    assert controls["advanced"].open is False  # closed until opened
    simple = ["upload", "input-preview", "source-prompt", "target-prompt", "edit", "edit-verdict", "edit-cost", "result",
              "downloads", "status"]
    assert not [elem_id for elem_id in simple if in_advanced(elem_id)]
    bench = ["method", "option-edict-p", "option-edict-leapfrog", "option-edict-precision", "steps", "inversion-guidance",
             "invert", "reconstruction", "control", "mask-source", "mask-drawing", "reweight", "start-step",
             "edit-guidance", "recipe", "mask-overlay"] + \
        ["setting-" + info.name.replace("_", "-") for info in advanced.generated_settings()]
    assert [elem_id for elem_id in bench if not in_advanced(elem_id)] == []
    buttons = [b for b in built[0].blocks.values() if type(b).__name__ == "Button" and not in_advanced(b)]
    assert [b.elem_id for b in buttons] == ["edit"]  # the simple page's one button
    assert advanced.recipe_value(advanced.LADDER_CHOICE) is None and advanced.recipe_value("no-mask") == "no-mask"


# ---------------------------------------------------------------- no module state, no environment writes


def test_the_app_carries_its_folder_and_building_it_writes_no_environment(built: tuple[Any, dict[str, str], Path]) -> None:
    app, before, workdir = built
    assert _environment() == before  # GRADIO_TEMP_DIR, GRADIO_ANALYTICS_ENABLED, ...: arguments or serve()'s
    assert app.analytics_enabled is False and app.delete_cache == CACHE_CLEANUP
    assert page.app_workdir(app) == workdir and workdir.is_dir()
    mutable = (dict, list, set, weakref.WeakKeyDictionary, weakref.WeakValueDictionary)
    for module in (page, advanced, cb, scenes, session):
        assert isinstance(module, ModuleType)
        state = [name for name, value in vars(module).items() if not name.startswith("__") and isinstance(value, mutable)]
        assert not state, f"{module.__name__} keeps module state: {state}"


def test_close_app_removes_the_folder_the_app_carries(embedded_model, tmp_path: Path) -> None:
    app = page.build_app(embedded_model, workdir=tmp_path / "ui", scenes=FAKE)
    (tmp_path / "ui" / "edit-1.png").write_bytes(b"x")
    page.close_app(app)
    assert page.app_workdir(app) is None and not (tmp_path / "ui").exists()
    page.close_app(app)  # twice is harmless


def test_serve_says_where_gradio_keeps_uploads_and_gives_the_environment_back(
        embedded_model, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def build(model: Any, workdir: Path) -> str:
        seen.update(model=model, workdir=workdir, temp=os.environ.get("GRADIO_TEMP_DIR"))
        return "the app"

    monkeypatch.setattr(page, "quiet_libraries", lambda verbose=False: None)
    monkeypatch.setattr(page, "_load_model", lambda model, config, device, offload="none": embedded_model)
    monkeypatch.setattr(page, "build_app", build)
    monkeypatch.setattr(page, "_stop_on_sigterm", lambda: None)
    monkeypatch.setattr(page, "launch", lambda app, host, port: seen.update(app=app, address=(host, port)))
    monkeypatch.setenv("GRADIO_TEMP_DIR", "/somewhere/else")
    try:
        page.serve(None, "127.0.0.1", 7999)
        assert seen["model"] is embedded_model and seen["app"] == "the app" and seen["address"] == ("127.0.0.1", 7999)
        assert seen["temp"] == str(seen["workdir"] / "uploads") and seen["workdir"].name.startswith("unsample-ui-")
        assert os.environ["GRADIO_TEMP_DIR"] == "/somewhere/else"
    finally:
        shutil.rmtree(seen.get("workdir", "/nonexistent"), ignore_errors=True)
