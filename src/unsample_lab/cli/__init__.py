"""The lab's commands on the ``unsample`` command line: demo, the embedded models' training,
installation, samples and evaluation (`unsample_lab.cli.embedded`), and the bench group
(`unsample_lab.cli.bench`).

`register` adds them to the library's app; the library finds it through the
``unsample.commands`` entry point (pyproject.toml), so `unsample` itself never imports the lab.
The lab's heavy modules (training, evaluation, benches, the shapes world, and the library's own
model code) are imported inside the commands: registering the commands must not load them, so
``unsample edit`` stays free of them (tests/test_layers.py checks it).
"""

from __future__ import annotations

import typer

from unsample_lab.cli import bench, demo, embedded


def register(app: typer.Typer) -> None:
    """Add the lab's commands to the ``unsample`` app."""
    app.command("demo")(demo.demo)
    app.command("evaluate-embedded")(embedded.evaluate_embedded)
    app.command("evaluate-embedded-pixel")(embedded.evaluate_embedded_pixel)
    app.command("train-embedded-pixel")(embedded.train_embedded_pixel_cmd)
    app.command("train-embedded")(embedded.train_embedded_cmd)
    app.command("install-embedded")(embedded.install_embedded)
    app.command("sample-embedded")(embedded.sample_embedded)
    group = typer.Typer(no_args_is_help=True, help="Benchmarks that write reports (report.md, results.json, CSV, plots).")
    group.command("reconstruction")(bench.bench_reconstruction)
    group.command("edit")(bench.bench_edit)
    group.command("edit-path")(bench.bench_edit_path)
    group.command("fidelity")(bench.bench_fidelity)
    group.command("scale")(bench.bench_scale)
    app.add_typer(group, name="bench")
