"""The web UI's callbacks without a browser: every bad input is one line, refused before any model
work, and anything else is a bug shown as unexpected with its traceback in the log; the session
cache makes a second edit cost only the edit; an edit is one EditSpec; the option controls carry
the method configs' own defaults and bounds."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import fields
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from unsample.editing.masks import MASK_SOURCES
from unsample.editing.spec import EditSpec, setting_info
from unsample.errors import InputError, UnsampleError
from unsample.methods.base import bounds_of
from unsample.methods.registry import available_methods, get_method
from unsample.ui import callbacks as cb
from unsample.ui import scenes
from unsample.ui.controls import method_controls, options_from_values
from unsample.ui.session import SessionState
from unsample.ui.settings import MAX_IMAGE_PIXELS
from unsample_lab.ui_scenes import CAPTIONS as SCENE_CAPTIONS

SOURCE = "a large red circle on a plain gray background"
TARGET = "a large green circle on a plain gray background"


@pytest.fixture(autouse=True)
def scenes_as_declared(monkeypatch: pytest.MonkeyPatch, declared_scene_entry_points: list[EntryPoint]) -> None:
    """The scene lookup reads pyproject.toml's ``unsample.scenes`` entry points (the shared venv's
    installed metadata may predate them)."""
    monkeypatch.setattr(scenes, "registered_entry_points", lambda: declared_scene_entry_points)


@pytest.fixture()
def state(tmp_path: Path) -> SessionState:
    return SessionState.create(tmp_path)


@pytest.fixture()
def red_circle(embedded_model, state: SessionState) -> SessionState:
    cb.set_image(embedded_model, state, cb.scene_image(SOURCE, embedded_model.resolution), "scene")
    return state


def _raises(message: str, fn, *args, **kwargs) -> str:
    with pytest.raises(ValueError) as err:
        fn(*args, **kwargs)
    assert isinstance(err.value, UnsampleError), repr(err.value)  # what the user can fix, not a bug
    text = cb.error_text(err.value)
    assert message in text and "\n" not in text and "Traceback" not in text, text
    return text


# ---------------------------------------------------------------- uploads


def test_a_text_file_uploaded_as_an_image_is_refused_by_name(tmp_path: Path) -> None:
    notes = tmp_path / "notes.png"
    notes.write_text("just some text, not a picture\n")
    _raises("'notes.png' is not an image this page can read", cb.read_upload, notes)
    _raises("upload an image first", cb.read_upload, None)


def test_an_image_over_the_pixel_limit_is_refused_before_decoding(tmp_path: Path) -> None:
    side = int(MAX_IMAGE_PIXELS**0.5) + 1
    big = tmp_path / "big.png"
    Image.new("L", (side, side)).save(big)
    _raises(f"more than the {MAX_IMAGE_PIXELS:,} this page takes", cb.read_upload, big)
    Image.new("RGB", (40, 30), "red").save(tmp_path / "small.png")
    assert cb.read_upload(tmp_path / "small.png").size == (40, 30)


@pytest.mark.model
def test_the_built_in_scenes_are_offered_their_own_caption(embedded_model, state: SessionState) -> None:
    from unsample_lab.shapes import is_held_out

    for caption in SCENE_CAPTIONS:
        assert not is_held_out(caption), caption  # training captions: the model knows them
        view = cb.set_image(embedded_model, state, cb.scene_image(caption, embedded_model.resolution), "scene")
        assert view.suggestion == caption
        assert view.preview.size == (256, 256)  # shown enlarged; the model's input stays 64 px
    assert state.image is not None and state.image.size == (64, 64)


def test_no_prompt_is_offered_for_other_models(tiny_model, tiny_image) -> None:
    assert cb.suggested_prompt(tiny_model, tiny_image) is None


# ---------------------------------------------------------------- invert: refused before any model work


@pytest.mark.model
@pytest.mark.parametrize(("request_", "message"), [
    (cb.InvertRequest(SOURCE.replace("red", "crimson"), "edict", steps=4), "words the model does not know: crimson"),
    (cb.InvertRequest(SOURCE, "edict", {"p": 2.0}, steps=4), "method 'edict': p=2.0 must be in (0, 1]"),
    (cb.InvertRequest(SOURCE, "edict", {"p": None}, steps=4), "option p is empty"),
    (cb.InvertRequest(SOURCE, "null-text", {"inner_steps": 1.5}, steps=4), "inner_steps=1.5 must be an integer >= 0"),
    (cb.InvertRequest(SOURCE, "fixed-point", {"tol": -1.0}, steps=4), "tol=-1.0 must be >= 0"),
    (cb.InvertRequest(SOURCE, "edict", {"q": 1.0}, steps=4), "has no option(s) q"),
    (cb.InvertRequest(SOURCE, "edict", steps=0), "steps must be a whole number in 1..1000"),
    (cb.InvertRequest(SOURCE, "edict", steps=4, guidance=float("nan")), "guidance=nan"),
    (cb.InvertRequest(SOURCE, "edict", steps=4, guidance=None), "inversion guidance is empty"),  # type: ignore[arg-type]
    (cb.InvertRequest(SOURCE, "rf-solver", steps=4), "does not run on this model"),
])
def test_bad_inversion_requests_are_one_line(embedded_model, red_circle: SessionState, request_: cb.InvertRequest,
                                             message: str) -> None:
    _raises(message, cb.invert, embedded_model, red_circle, request_)
    assert not red_circle.cache  # nothing inverted


@pytest.mark.model
def test_inverting_without_an_image_says_so(embedded_model, state: SessionState) -> None:
    _raises("upload an image or pick a built-in scene first", cb.invert, embedded_model, state,
            cb.InvertRequest(SOURCE, "ddim", steps=4))


# ---------------------------------------------------------------- edit: refused before any model work


@pytest.mark.model
def test_bad_edits_are_refused_before_inverting(embedded_model, red_circle: SessionState, tmp_path: Path) -> None:
    notes = tmp_path / "mask.png"
    notes.write_text("not a mask")
    inv = cb.InvertRequest(SOURCE, "ddim", steps=4)
    blank = {"background": np.zeros((64, 64, 4), np.uint8), "layers": [np.zeros((64, 64, 4), np.uint8)], "composite": None}
    cases = [
        (cb.EditRequest(""), "write the target prompt"),
        (cb.EditRequest(TARGET.replace("green", "verdant")), "does not know: verdant"),
        (cb.EditRequest(TARGET, mask=cb.DRAWN_MASK, drawn_mask=blank), "paint the region that may change"),
        (cb.EditRequest(TARGET, mask=cb.UPLOADED_MASK, mask_file=str(notes)), "'mask.png' is not an image"),
        (cb.EditRequest(TARGET, mask=cb.UPLOADED_MASK), "upload a mask image (white = may change) first"),
        (cb.EditRequest(TARGET, control="reweight", reweight="green:2"), "reweight 'green:2' is not WORD=SCALE"),
        (cb.EditRequest(TARGET, start_step=5), "start step must be a whole number in 0..4"),
        (cb.EditRequest(TARGET, guidance=None), "edit guidance is empty"),  # type: ignore[arg-type]
        (cb.EditRequest(TARGET, guidance=500.0), "edit guidance=500.0 must be a finite number in [0, 100]"),
    ]
    for request, message in cases:
        _raises(message, cb.edit, embedded_model, red_circle, inv, request)
    assert not red_circle.cache and not list(red_circle.folder.iterdir())  # no inversion, no file


def test_error_text_is_one_line_and_hides_tracebacks_of_the_unexpected() -> None:
    # issue 32: what the user can fix is an UnsampleError (a plain ValueError is now a bug, below)
    assert cb.error_text(InputError("first line\nsecond")) == "first line"
    assert cb.error_text(cb.UIError("first line\nsecond")) == "first line" and issubclass(cb.UIError, InputError)
    assert cb.error_text(OSError(28, "No space left on device")) == "[Errno 28] No space left on device"
    text = cb.error_text(RuntimeError("CUDA out of memory\n  at ..."))
    assert text == "unexpected RuntimeError: CUDA out of memory (details in the server's log)"
    assert cb.error_text(ValueError("first line\nsecond")) == "unexpected ValueError: first line (details in the server's log)"


def test_a_plain_value_error_inside_the_edit_is_a_bug_shown_as_unexpected_and_logged(
        embedded_model, red_circle: SessionState, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import unsample

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("index 7 is out of bounds\n(a bug, not the user's input)")

    monkeypatch.setattr(unsample, "edit", broken)
    with pytest.raises(ValueError) as err:
        cb.edit(embedded_model, red_circle, cb.InvertRequest(SOURCE, "ddim", steps=4), cb.EditRequest(TARGET))
    with caplog.at_level(logging.ERROR, logger=cb.log.name):
        text = cb.error_text(err.value)
    assert text == "unexpected ValueError: index 7 is out of bounds (details in the server's log)"
    [record] = [r for r in caplog.records if r.name == cb.log.name]
    assert record.levelno == logging.ERROR and record.exc_info is not None and record.exc_info[1] is err.value
    assert "in broken" in caplog.text and "Traceback" in caplog.text  # the server's log has the traceback


def test_an_input_error_inside_the_edit_is_its_own_line(
        embedded_model, red_circle: SessionState, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import unsample

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise InputError("an attention mask needs words that differ between the prompts, or blend_words\nmore")

    monkeypatch.setattr(unsample, "edit", refused)
    with caplog.at_level(logging.DEBUG, logger=cb.log.name):
        text = _raises("an attention mask needs words that differ", cb.edit, embedded_model, red_circle,
                       cb.InvertRequest(SOURCE, "ddim", steps=4), cb.EditRequest(TARGET))
    assert text == "an attention mask needs words that differ between the prompts, or blend_words"
    assert not [r for r in caplog.records if r.name == cb.log.name]  # nothing for the log: not a bug


# ---------------------------------------------------------------- one EditSpec per edit


def test_the_request_defaults_are_the_specs() -> None:
    request = cb.EditRequest(TARGET)
    for name in ("control", "start_step", "guidance", "cross_steps", "self_steps"):
        assert getattr(request, name) == setting_info(name).default, name
    assert request.mask == EditSpec().mask_source() and request.mask in cb.MASK_CHOICES
    assert set(cb.MASK_CHOICES) == {*MASK_SOURCES, cb.DRAWN_MASK, cb.UPLOADED_MASK}
    assert [value for _, value in cb.CONTROL_CHOICES] == list(setting_info("control").choices)
    request = cb.InvertRequest(SOURCE, "ddim")
    assert (request.steps, request.guidance) == (setting_info("steps").default, setting_info("inversion_guidance").default)


def test_an_edit_is_one_spec_its_prompts_checked_once(embedded_model, red_circle: SessionState,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import unsample
    from unsample.api import common

    calls: list[dict[str, Any]] = []
    real_edit = unsample.edit

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs | {"spec": args[2]})
        return real_edit(*args, **kwargs)

    checked: list[str] = []
    real_problems = common.prompt_problems

    def counted(model: Any, prompt: str) -> Any:
        checked.append(prompt)
        return real_problems(model, prompt)

    monkeypatch.setattr(unsample, "edit", spy)
    monkeypatch.setattr(common, "prompt_problems", counted)
    request = cb.EditRequest(TARGET, control="reweight", reweight="green=2, circle=0.5", blend_words="green, circle",
                             cross_steps=0.6, self_steps=0.2, guidance=3.0)
    view = cb.edit(embedded_model, red_circle, cb.InvertRequest(SOURCE, "ddim", steps=4), request)
    [call] = calls
    spec = call["spec"]
    assert isinstance(spec, EditSpec) and call["output"] == "result" and call["unknown_words"] == "checked"
    assert (spec.target_prompt, spec.control, spec.reweight, spec.blend_words) == \
        (TARGET, "reweight", {"green": 2.0, "circle": 0.5}, ("green", "circle"))
    assert (spec.cross_steps, spec.self_steps, spec.guidance, spec.start_step, spec.mask) == (0.6, 0.2, 3.0, 0, "noise")
    assert (spec.method, spec.steps, spec.inversion_guidance, spec.options) == ("ddim", 4, 1.0, {})  # the inversion's
    assert sorted(checked) == sorted([SOURCE, TARGET])  # each prompt once: the page checks, the API trusts it
    record = json.loads(view.files[1].read_text())
    assert record["edit"] == spec.to_json() and EditSpec.from_json(record["edit"]) == spec
    assert record["reweight"] == {"green": 2.0, "circle": 0.5} and record["blend_words"] == ["green", "circle"]


# ---------------------------------------------------------------- the cache: invert once, edit many times


@pytest.mark.model
def test_a_second_edit_reuses_the_inversion_and_costs_only_the_edit(embedded_model, red_circle: SessionState) -> None:
    request = cb.InvertRequest(SOURCE, "ddim", steps=6)
    first = cb.edit(embedded_model, red_circle, request, cb.EditRequest(TARGET))
    assert not first.inversion_reused and "inverted first" in first.cost
    begin = time.perf_counter()
    second = cb.edit(embedded_model, red_circle, request, cb.EditRequest(TARGET.replace("green", "blue")))
    assert second.inversion_reused and "edit 2 of this inversion" in second.cost and "inversion reused" in second.cost
    assert "inverted first" not in second.cost and len(red_circle.cache) == 1
    assert time.perf_counter() - begin < 30
    # the same picture uploaded again hits the same cache entry; another prompt or option does not
    cb.set_image(embedded_model, red_circle, cb.scene_image(SOURCE, embedded_model.resolution), "again")
    assert cb.invert(embedded_model, red_circle, request).reused
    assert not cb.invert(embedded_model, red_circle, cb.InvertRequest(SOURCE, "ddim", {"precision": "float64"}, steps=6)).reused
    # the downloads: the PNG with its sidecar, and the inversion file that loads back
    png, sidecar = second.files
    assert png.suffix == ".png" and sidecar == png.with_suffix(".json")
    import unsample

    record = json.loads(sidecar.read_text())
    assert record["inversion_reused"] is True and record["prompt"] == TARGET.replace("green", "blue")
    entry = red_circle.cache[red_circle.last_key]  # type: ignore[index]
    assert unsample.Inversion.load(entry.file).steps == 6


@pytest.mark.model
def test_a_drawn_mask_confines_the_edit(embedded_model, red_circle: SessionState) -> None:
    layer = np.zeros((256, 256, 4), np.uint8)
    layer[96:160, 96:160, 3] = 255  # painted: the middle quarter of the shown image
    drawn = {"background": np.zeros((256, 256, 4), np.uint8), "layers": [layer], "composite": None}
    view = cb.edit(embedded_model, red_circle, cb.InvertRequest(SOURCE, "ddim", steps=4),
                   cb.EditRequest(TARGET, mask=cb.DRAWN_MASK, drawn_mask=drawn, guidance=1.0, settings={"escalate": False}))
    assert view.mask_overlay is not None
    assert view.mask_overlay.size == (256, 256)  # on the photo, enlarged so the mask's cells show
    assert view.before.size == view.after.size == (64, 64)  # the photo and its edit at the photo's own size
    record = json.loads(view.files[1].read_text())
    assert record["mask"] == cb.DRAWN_MASK and record["edit"]["mask"] == "user" and 0 < record["mask_area"] < 1
    mask = cb.mask_from_drawing(drawn)
    assert mask is not None and mask.size == (256, 256) and np.asarray(mask)[128, 128] == 255


@pytest.mark.model
def test_a_non_square_photo_is_kept_as_uploaded_and_edited_back_at_its_own_size(embedded_model,
                                                                              state: SessionState) -> None:
    photo = Image.new("RGB", (96, 64), (128, 128, 128))
    photo.paste(cb.scene_image(SOURCE, embedded_model.resolution), (16, 0))
    view = cb.set_image(embedded_model, state, photo, "wide.png")
    assert state.image is not None and state.image.size == (96, 64) and "96 x 64 px" in view.note
    request = cb.InvertRequest(SOURCE, "ddim", steps=4)
    assert request.fit == setting_info("fit").default
    edited = cb.edit(embedded_model, state, request, cb.EditRequest(TARGET, settings={"escalate": False}))
    assert edited.before.size == edited.after.size == (96, 64)  # the slider: the photo's own size
    with Image.open(edited.files[0]) as png:
        assert png.size == (96, 64)  # and the file written
    assert state.last_key is not None and state.last_key.fit == request.fit
    # another fit is another working image: the next edit inverts again; a fit the spec does not know is refused
    again = cb.edit(embedded_model, state, cb.InvertRequest(SOURCE, "ddim", steps=4, fit="crop"),
                    cb.EditRequest(TARGET, settings={"escalate": False, "fit": "crop"}))
    assert not again.inversion_reused and len(state.cache) == 2
    assert again.before.size == again.after.size == (64, 64)  # a crop's edit is the crop, beside the crop
    assert cb.invert(embedded_model, state, cb.InvertRequest(SOURCE, "ddim", steps=4, fit="model")).reused  # crop's old name
    _raises("fit='squash' is not supported", cb.invert, embedded_model, state,
            cb.InvertRequest(SOURCE, "ddim", steps=4, fit="squash"))
    record = json.loads(edited.files[1].read_text())
    assert record["sizes"] == {"fit": "area", "input": [96, 64], "working": [80, 48], "output": [96, 64]}


# ---------------------------------------------------------------- controls: the configs' own defaults and bounds


def test_option_controls_carry_the_config_defaults_and_bounds() -> None:
    for name in available_methods():
        config = get_method(name).config
        controls = {c.name: c for c in method_controls(name)}
        assert set(controls) == {f.name for f in fields(config)}
        for f in fields(config):
            assert controls[f.name].default == f.default
            bounds = bounds_of(f)
            if bounds is None:
                continue
            assert bounds.text() in controls[f.name].info
            outside = [bounds.low if bounds.low_open else bounds.low - 1] if bounds.low is not None else []
            outside += [bounds.high if bounds.high_open else bounds.high + 1] if bounds.high is not None else []
            for value in outside:
                value = int(value) if bounds.integer else float(value)
                with pytest.raises(ValueError, match=rf"^{f.name}={value!r} must be"):
                    config(**{f.name: value})
    assert options_from_values("edict", {"p": 0.8, "leapfrog": True, "precision": "float64"}) == {}
    assert options_from_values("edict", {"p": 1}) == {"p": 1.0}
    assert "float in (0, 1], default 0.8" in {c.name: c for c in method_controls("edict")}["p"].info


# ---------------------------------------------------------------- the page's own handlers (no browser)


@pytest.mark.model
def test_the_page_handlers_show_errors_in_the_status_line(embedded_model, tmp_path: Path) -> None:
    import socket

    from unsample.ui.app import build_app, close_app, launch

    app = build_app(embedded_model, workdir=tmp_path / "ui")
    try:
        handlers = {fn.fn.__name__: fn.fn for fn in app.fns.values()}
        notes = tmp_path / "notes.png"
        notes.write_text("text")
        state, *_, status = handlers["on_upload"](None, str(notes))
        assert status.startswith("**Error:**") and "'notes.png' is not an image" in status
        *_, status = handlers["on_invert"](None, state, SOURCE, "edict", 4, 1.0)
        assert "upload an image or pick a built-in scene first" in status
        with socket.socket() as busy:  # a port in use is one line too, and the app's folder is removed
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            _raises("cannot listen on 127.0.0.1:", launch, app, "127.0.0.1", busy.getsockname()[1], block=False)
    finally:
        close_app(app)
    assert not (tmp_path / "ui").exists()


@pytest.mark.model
def test_a_generated_setting_reaches_the_edit_and_its_record(embedded_model, red_circle: SessionState) -> None:
    """The page's generated controls (here the edit check) go into the one EditSpec like the laid-out ones."""
    request = cb.InvertRequest(SOURCE, "ddim", steps=4)
    view = cb.edit(embedded_model, red_circle, request, cb.EditRequest(TARGET, settings={"check": True}))
    record = json.loads(view.files[1].read_text())
    assert record["edit"]["check"] is True and isinstance(record["check"]["edit_took"], bool)
    assert view.verdict.startswith(("Check: ", "**Warning: ")) and "Check: " not in view.cost

