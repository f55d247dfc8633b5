"""``unsample demo``: invert, reconstruct and edit a built-in scene on an embedded model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from unsample.cli.common import DeviceOpt, UserError, friendly, quiet_libraries


@friendly
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the demo's images.")] = Path("out/demo"),
    model: Annotated[str | None, typer.Option("--model", help="embedded (the default), embedded-pixel (the "
                                              "classifier-guidance demo), embedded-flow, or a hub id / folder.")] = None,
    device: DeviceOpt = "auto",
    method: Annotated[str | None, typer.Option("--method", help="Inversion method (default: the edit default).")] = None,
    steps: Annotated[int | None, typer.Option("--steps", min=1, help="Steps (default: the edit default).")] = None,
) -> None:
    """Invert, reconstruct and edit a built-in scene on an embedded model; write PNGs into --out.

    With --model embedded-pixel (or a pixel-space folder that holds classifier.safetensors): invert
    a circle, turn it into a star by classifier guidance, and write the jumping-prediction grids."""
    quiet_libraries()
    from unsample_lab.pixel_demo import is_pixel_demo_model, run_pixel_demo  # registration stays cheap

    if model is not None and is_pixel_demo_model(model):
        if method not in (None, "ddim"):
            raise UserError(f"the pixel demo inverts with ddim (the classic guided-diffusion demo), not {method!r}")
        pix = run_pixel_demo(out, model=model, device=device, steps=steps or 50)
        typer.echo(f"model: {pix.model}")
        for name, path in pix.files.items():
            typer.echo(f"{name:>20}: {path}")
        verdict = "a star, colour and background kept" if pix.edit_correct else f"detector reads {pix.edit_shapes}"
        typer.echo(f"round trip PSNR {pix.psnr_reconstruction:.2f} dB; edit: {verdict}; {pix.seconds:.1f} s")
        return
    from unsample_lab.demo import run_demo  # registration stays cheap

    res = run_demo(out, model=model, device=device, method=method, steps=steps)
    typer.echo(f"model: {res.model}")
    for name, path in res.files.items():
        typer.echo(f"{name:>15}: {path}")
    typer.echo(f"reconstruction PSNR {res.psnr_reconstruction:.2f} dB (VAE floor {res.psnr_vae_floor:.2f} dB), {res.seconds:.1f} s")
