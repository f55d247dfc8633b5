"""``unsample methods``, ``vocabulary`` and ``ui``: what runs, what the model reads, the web page."""

from __future__ import annotations

import textwrap
from typing import Annotated

import typer

from unsample.cli.common import (
    DeviceOpt,
    ModelConfigOpt,
    ModelOpt,
    OffloadOpt,
    friendly,
    load_model,
    quiet_libraries,
    verbose,
)
from unsample.methods.options import describe_options
from unsample.methods.registry import available_methods, get_method
from unsample.ui import settings as ui_settings


@friendly
def methods(
    model: Annotated[str | None, typer.Option("--model", help="Also say which methods run on this model "
                                              "(hub id, folder or an embedded model's name).")] = None,
    model_config: ModelConfigOpt = None,
    device: DeviceOpt = "auto",
    offload: OffloadOpt = "none",
) -> None:
    """List the inversion methods, their options and model calls per step."""
    schedule = None
    if model is not None:
        schedule = load_model(model, device, None, model_config, offload).schedule
    for name in available_methods():
        spec = get_method(name)
        typer.echo(f"{name:<16} calls/step {spec.calls_per_step:<8} {'exact' if spec.exact else ''}")
        typer.echo(f"  {spec.summary}")
        if schedule is not None:
            reason = spec.refuses(schedule) if spec.refuses is not None else None
            typer.echo(f"  on this model: {'refused: ' + reason if reason else 'runs'}")
        for opt, kind, default in describe_options(spec.config):
            typer.echo(f"  --option {opt}=<{kind}>  (default {default})")


@friendly
def vocabulary(model: ModelOpt = None, model_config: ModelConfigOpt = None, device: DeviceOpt = "auto",
               offload: OffloadOpt = "none") -> None:
    """List the words the model's tokenizer knows (others in a prompt would be dropped)."""
    m = load_model(model, device, None, model_config, offload)
    words = m.vocabulary()
    if words is None:
        typer.echo(f"{m.name}: the tokenizer has an open vocabulary (subword pieces); any word can be spelled")
        return
    typer.echo(f"{m.name}: {len(words)} known words")
    typer.echo(textwrap.fill(" ".join(words), width=100, break_long_words=False, break_on_hyphens=False))


@friendly
def ui(
    model: ModelOpt = None,
    model_config: ModelConfigOpt = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on: 127.0.0.1 is this machine only, "
                                      "0.0.0.0 every interface.")] = ui_settings.DEFAULT_HOST,
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = ui_settings.DEFAULT_PORT,
    device: DeviceOpt = "auto",
    offload: OffloadOpt = "none",
) -> None:
    """Start the web UI: upload or pick an image, invert it once, edit it many times, download the results."""
    quiet_libraries()
    from unsample.ui.app import serve  # gradio is heavy: loaded only when the page is served

    serve(model, host, port, model_config=model_config, device=device, verbose=verbose(), offload=offload)
