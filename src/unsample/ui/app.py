"""The page: a gr.Blocks layout over `unsample.ui.callbacks`, and the server that runs it.

``build_app(model)`` loads the model and lays out the page: the simple view (a photo, what is in
it, what it should become, one Edit button, the before / after slider, the edit check's verdict
and warnings, the downloads) above a closed "Advanced" section (`unsample.ui.advanced`: the
method, its options, masks, prompt-to-prompt, the ladder's recipes, every other edit setting made
from `EditSpec`'s declaration, and an Invert button); ``serve(model, host, port)`` (the ``unsample
ui`` command, the process's entry point) launches it on this machine only unless told otherwise,
prints the URL and, when it stops, removes its temporary folder (uploads, edits, inversion
files). Gradio is imported here, inside the functions, so ``import unsample`` stays light;
analytics are off (an argument of the page) and no share link is made (one of `launch`), so
launching needs no network. Nothing here is module state: a built app carries its own folder.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import unsample
from unsample.api.quiet import quiet_libraries
from unsample.backends.base import Model as ModelBase
from unsample.editing.spec import setting_info
from unsample.errors import InputError
from unsample.ui import callbacks as cb
from unsample.ui.advanced import INVERSION_SETTINGS, advanced_section, from_spec, recipe_value
from unsample.ui.scenes import SceneProvider, installed_scenes
from unsample.ui.session import SessionState, close_session
from unsample.ui.settings import (
    CACHE_CLEANUP,
    DEFAULT_HOST,
    DEFAULT_PORT,
    MAX_UPLOAD_SIZE,
    MODEL_CONCURRENCY,
    PAGE_CONCURRENCY,
    QUEUE_MAX_SIZE,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    import gradio as gr
    from PIL import Image

    from unsample.backends.base import Model

PAGE_CSS = ".pixels img { image-rendering: pixelated; }"
"""The photo and the before / after are served at their own size and scaled by the browser: a small
image (the embedded model's 64 px) shows its pixels instead of a blur (downscaling is unaffected)."""
WORKDIR_ATTRIBUTE = "unsample_workdir"
"""The attribute of a built app (its gr.Blocks) that holds the app's temporary folder (`app_workdir`)."""


def app_workdir(app: gr.Blocks) -> Path | None:
    """The temporary folder of an app `build_app` made (None once `close_app` removed it)."""
    found = getattr(app, WORKDIR_ATTRIBUTE, None)
    return found if isinstance(found, Path) else None


def _load_model(model: str | Model | None, model_config: str | None, device: str, offload: str = "none") -> Model:
    if isinstance(model, ModelBase):
        return model
    if model_config is not None and model is None:
        raise InputError("model_config is for a single-file model; give the .safetensors file as the model")
    return unsample.load(model, device=device, config=model_config, offload=offload)


def _status(text: str, error: bool = False) -> str:
    return f"**Error:** {text}" if error else text


def build_app(model: str | Model | None = None, workdir: Path | None = None, *, model_config: str | None = None,
              device: str = "auto", scenes: SceneProvider | None = None) -> gr.Blocks:
    """The page for ``model``: anything `unsample.load` takes (a hub id, a folder, a single file
    with ``model_config``, an embedded model's name; None: the embedded default) or a loaded
    `Model`. Sessions' outputs go to ``workdir`` (default: a new temporary folder, removed by
    `close_app` or when the process exits). ``scenes`` gives the built-in scenes and the suggested
    source prompts (default: the installed provider, `unsample.ui.scenes.installed_scenes`; with
    none the page has no scene picker)."""
    m = _load_model(model, model_config, device)  # a bad model fails before anything is created
    provider = scenes if scenes is not None else installed_scenes()
    root = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="unsample-ui-"))
    root.mkdir(parents=True, exist_ok=True)
    if workdir is None:
        atexit.register(shutil.rmtree, root, True)
    import gradio as gr  # heavy: imported when a page is built

    methods = cb.model_methods(m)
    preferred = setting_info("method").default
    default_method = preferred if preferred in methods else methods[0]
    attention = m.supports_attention_control  # prompt-to-prompt and attention masks hook a UNet's cross-attention
    masks = [c for c in cb.MASK_CHOICES if attention or c not in ("attention", "intersect")]
    controls = [c for c in cb.CONTROL_CHOICES if attention or c[1] == "none"]

    def session(state: Any) -> SessionState:
        return state if isinstance(state, SessionState) else SessionState.create(root)

    # analytics_enabled=False: no telemetry and no version check (gradio then sets HF_HUB_DISABLE_TELEMETRY
    # itself); delete_cache: gradio removes the files it cached for this app (uploads, shown images) on close
    with gr.Blocks(title="unsample", analytics_enabled=False, delete_cache=CACHE_CLEANUP) as app:
        state = gr.State(None, delete_callback=close_session)
        gr.Markdown(f"## unsample: edit a photo with words\nDrop a photo, say what is in it and what it should "
                    "become, press **Edit**. The first edit of a photo inverts it (finds the noise the model would "
                    "turn back into it); the next edits reuse that, so they cost only the edit. The edited photo "
                    f"comes back at its own size. Model: `{m.name}` ({m.resolution} px).")
        status = gr.Markdown("", elem_id="status")
        with gr.Row():
            with gr.Column():
                upload = gr.File(label="Drop a photo (PNG, JPEG, WebP; any shape)", type="filepath", elem_id="upload",
                                 height=120)
                scene = gr.Dropdown(list(provider.captions), value=None, label="... or a built-in scene", elem_id="scene",
                                    visible=bool(provider.captions))
                preview = gr.Image(label="Your photo", type="pil", format="png", interactive=False,
                                   elem_id="input-preview", elem_classes=["pixels"])
            with gr.Column():
                prompt = gr.Textbox(label="What is in it (the source prompt)", elem_id="source-prompt",
                                    info="Describes the photo as it is.")
                # each edit control: its default, range and help line from EditSpec's setting
                target = gr.Textbox(**from_spec("target_prompt"), label="What it should become (the target prompt)",
                                    elem_id="target-prompt")
                edit_button = gr.Button("Edit", variant="primary", elem_id="edit")
                verdict = gr.Markdown("", elem_id="edit-verdict")
                edit_cost = gr.Markdown("", elem_id="edit-cost")
            with gr.Column():
                result = gr.ImageSlider(label="Before / after", type="pil", format="png", elem_id="result",
                                        elem_classes=["pixels"])
                downloads = gr.File(label="The edited photo (PNG) and its settings (JSON)", file_count="multiple",
                                    interactive=False, elem_id="downloads")
        with gr.Accordion("Advanced: the method, its options, masks, prompt-to-prompt, the ladder's recipes",
                          open=False, elem_id="advanced"):
            adv = advanced_section(gr, methods, default_method, masks, controls)

        def show_image(current: Any, image_of: Callable[[Any], tuple[Image.Image, str]], source: Any) -> tuple[Any, ...]:
            state_now = session(current)
            try:
                picture, name = image_of(source)
                view = cb.set_image(m, state_now, picture, name, provider)
            except Exception as err:  # noqa: BLE001 - every failure becomes one line in the page
                return state_now, gr.skip(), gr.skip(), gr.skip(), _status(cb.error_text(err), error=True)
            editor = {"background": view.preview, "layers": [], "composite": None}
            suggestion = view.suggestion if view.suggestion is not None else gr.skip()
            return state_now, view.preview, editor, suggestion, _status(view.note)

        def on_upload(current: Any, path: str | None) -> tuple[Any, ...]:
            if path is None:
                return current, gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return show_image(current, lambda p: (cb.read_upload(p), Path(p).name), path)

        def on_scene(current: Any, caption: str | None) -> tuple[Any, ...]:
            if not caption:
                return current, gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return show_image(current, lambda c: (cb.scene_image(c, m.resolution, provider=provider), f"scene '{c}'"),
                              caption)

        # the handlers take their inputs positionally: these names, then the method options (adv.option_inputs)
        inversion_settings = [name for name in adv.generated if name in INVERSION_SETTINGS]
        invert_inputs = [state, prompt, adv.method, adv.steps, adv.guidance] + [adv.generated[n] for n in inversion_settings]
        invert_names = ["state", "prompt", "method", "steps", "guidance"] + inversion_settings
        edit_settings = [name for name in adv.generated if name not in INVERSION_SETTINGS]
        edit_inputs = invert_inputs + [target, adv.control, adv.mask, adv.drawing, adv.mask_file, adv.start_step,
                                       adv.edit_guidance, adv.reweight, adv.blend_words, adv.cross_steps,
                                       adv.self_steps, adv.recipe] + [adv.generated[n] for n in edit_settings]
        edit_names = invert_names + ["target", "control", "mask", "drawing", "mask_file", "start_step", "edit_guidance",
                                     "reweight", "blend_words", "cross_steps", "self_steps", "recipe"] + edit_settings

        def invert_request(values: dict[str, Any]) -> cb.InvertRequest:
            chosen = values["method"]
            options = {opt: value for (owner, opt), value in zip(adv.option_names, values["options"]) if owner == chosen}
            sizing = {"fit": values["fit"]} if values.get("fit") is not None else {}
            return cb.InvertRequest(prompt=values["prompt"] or "", method=chosen, option_values=options,
                                    steps=values["steps"], guidance=values["guidance"], **sizing)

        def unpack(names: list[str], values: tuple[Any, ...]) -> dict[str, Any]:
            named = dict(zip(names, values[:len(names)]))
            named["options"] = list(values[len(names):])
            return named

        def on_invert(progress: Any = gr.Progress(track_tqdm=True), *values: Any) -> tuple[Any, ...]:
            got = unpack(invert_names, values)
            state_now = session(got["state"])
            try:
                view = cb.invert(m, state_now, invert_request(got), progress=True)
            except Exception as err:  # noqa: BLE001
                return state_now, gr.skip(), gr.skip(), gr.skip(), _status(cb.error_text(err), error=True)
            done = "inversion reused" if view.reused else f"inverted with {view.entry.inversion.method}"
            return state_now, view.reconstruction, view.cost, str(view.entry.file), _status(f"{done}; now edit it")

        def on_edit(progress: Any = gr.Progress(track_tqdm=True), *values: Any) -> tuple[Any, ...]:
            got = unpack(edit_names, values)
            state_now = session(got["state"])
            try:
                request = cb.EditRequest(
                    prompt=got["target"] or "", control=got["control"], mask=got["mask"], drawn_mask=got["drawing"],
                    mask_file=got["mask_file"], start_step=got["start_step"], guidance=got["edit_guidance"],
                    reweight=got["reweight"] or "", blend_words=got["blend_words"] or "",
                    cross_steps=float(got["cross_steps"]), self_steps=float(got["self_steps"]),
                    recipe=recipe_value(got["recipe"]),
                    settings={name: got[name] for name in inversion_settings + edit_settings})
                view = cb.edit(m, state_now, invert_request(got), request, progress=True)
            except Exception as err:  # noqa: BLE001
                skip = gr.skip()
                return state_now, skip, skip, skip, skip, skip, skip, _status(cb.error_text(err), error=True)
            return (state_now, (view.before, view.after), view.mask_overlay, view.verdict, view.cost,
                    [str(p) for p in view.files], str(view.inversion_file), _status(f"edited: '{request.prompt}'"))

        page = {"concurrency_limit": PAGE_CONCURRENCY, "concurrency_id": "page"}
        model_job = {"concurrency_limit": MODEL_CONCURRENCY, "concurrency_id": "model"}
        image_outputs = [state, preview, adv.drawing, prompt, status]
        upload.change(on_upload, [state, upload], image_outputs, **page)
        scene.change(on_scene, [state, scene], image_outputs, **page)
        adv.method.change(lambda chosen: [gr.update(visible=name == chosen) for name in methods], adv.method,
                          adv.groups, **page)
        adv.invert_button.click(on_invert, invert_inputs + adv.option_inputs,
                                [state, adv.reconstruction, adv.invert_cost, adv.inversion_file, status], **model_job)
        edit_outputs = [state, result, adv.mask_view, verdict, edit_cost, downloads, adv.inversion_file, status]
        edit_button.click(on_edit, edit_inputs + adv.option_inputs, edit_outputs, **model_job)
    app.queue(max_size=QUEUE_MAX_SIZE, default_concurrency_limit=MODEL_CONCURRENCY)
    setattr(app, WORKDIR_ATTRIBUTE, root)  # the app carries its folder: launch allows it, close_app removes it
    return app


def _theme() -> Any:
    """The default theme with the system's fonts (the stock one asks Google Fonts for them)."""
    import gradio as gr

    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "monospace"])


def launch(app: gr.Blocks, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, block: bool = True,
           quiet: bool = False) -> str:
    """Start serving ``app`` on ``host:port``; returns the local URL (after the server stops when ``block``)."""
    root = app_workdir(app)
    try:
        _, url, _ = app.launch(server_name=host, server_port=port, share=False, inbrowser=False, quiet=True,
                               prevent_thread_lock=True, show_error=False, max_file_size=MAX_UPLOAD_SIZE,
                               allowed_paths=[str(root)] if root is not None else None, footer_links=[],
                               theme=_theme(), css=PAGE_CSS, ssr_mode=False, enable_monitoring=False, run_history=False)
    except OSError as err:  # gradio: "Cannot find empty port in range", or an address this machine does not have
        close_app(app)
        raise InputError(f"cannot listen on {host}:{port} ({str(err).split('.')[0]}); the port may be in use: "
                         "choose another with --port, or another --host") from None
    if not quiet:
        print(f"unsample ui: open {url} (Ctrl+C stops it)", flush=True)
    if block:
        try:
            app.block_thread()
        finally:
            close_app(app)
    return url


def close_app(app: gr.Blocks) -> None:
    """Stop the server and remove the app's temporary folder (uploads, edits, inversion files)."""
    app.close(verbose=False)
    root = app_workdir(app)
    if root is not None:
        shutil.rmtree(root, ignore_errors=True)
        setattr(app, WORKDIR_ATTRIBUTE, None)


def _stop_on_sigterm() -> None:
    """SIGTERM ends the server like Ctrl+C does (its folder removed), not abruptly."""

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


@contextmanager
def gradio_cache_in(folder: Path) -> Iterator[None]:
    """Gradio keeps its uploads and the files it serves in ``folder`` while the block runs; the
    environment is given back after. An environment write because gradio has no per-app cache
    folder: it reads GRADIO_TEMP_DIR at its import, in every component it builds and on every
    request, so the folder is the process's; only its entry point (`serve`, a test's server) says it."""
    before = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(folder)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = before


def serve(model: str | None = None, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *,
          model_config: str | None = None, device: str = "auto", verbose: bool = False, offload: str = "none") -> None:
    """``unsample ui``: load ``model`` (None: the embedded default), serve the page on
    ``host:port`` until Ctrl+C or SIGTERM, then remove the temporary folder.

    The process's entry point: it quiets the libraries' logging (`quiet_libraries`, unless
    ``verbose``), and gradio's cache (uploads,
    shown images) goes under the app's folder (`gradio_cache_in`), removed with it."""
    print(f"unsample ui: loading {model or 'the embedded model'} ...", flush=True)
    quiet_libraries(verbose)
    m = _load_model(model, model_config, device, offload)  # a bad model fails before anything is created
    root = Path(tempfile.mkdtemp(prefix="unsample-ui-"))
    atexit.register(shutil.rmtree, root, True)
    with gradio_cache_in(root / "uploads"):
        app = build_app(m, root)
        _stop_on_sigterm()
        launch(app, host, port)
