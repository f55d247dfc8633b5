"""The ``unsample`` command line: a thin layer over `unsample.api`, one module per command group.

Every command that writes a PNG writes a JSON sidecar next to it (same name, ``.json``) with
all parameters, the model cost (NFE, calls) and the timings. Bad input gets a one-line error
and exit code 2 (`unsample.cli.common.friendly`); outputs are written to a temp name and renamed,
so nothing half-written stays. Commands from outside the library (the lab's demo, training and
benches) join through the ``unsample.commands`` entry point group: each entry is a function that
takes the app and adds its commands.
"""

from __future__ import annotations

import signal
import sys
from importlib.metadata import entry_points
from typing import Annotated, Any

import typer

from unsample.cli import batch, editing, info, inversion

COMMANDS_GROUP = "unsample.commands"
"""The entry point group whose functions add commands to the app (the lab registers there)."""


def _options(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an input error too (for bug reports).")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show the libraries' warnings and loading bars "
                                          "(diffusers, transformers), hidden by default.")] = False,
) -> None:
    """Invert diffusion models and edit real images with text."""
    ctx.obj = {"debug": debug, "verbose": verbose}


def build_app() -> typer.Typer:
    """The app with the library's commands and every registered extension's."""
    cli = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                      help="Invert diffusion models and edit real images with text.")
    cli.callback()(_options)
    for fn in (inversion.invert, inversion.reconstruct, editing.edit, editing.flowedit, info.methods, info.ui,
               inversion.trajectory, info.vocabulary, batch.batch):
        cli.command()(fn)
    for entry in entry_points(group=COMMANDS_GROUP):
        entry.load()(cli)
    return cli


def __getattr__(name: str) -> Any:
    """``unsample.cli.app``: a new app, built when asked for (importing this module loads no
    extension, so an extension may import `unsample.cli.common` first)."""
    if name == "app":
        return build_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def install_signal_cleanup() -> None:
    """SIGTERM exits like Ctrl-C does (through the stack), so temp files and folders are removed by the
    ``finally`` blocks that made them instead of being left half-written."""
    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def _usage_error(err: Exception) -> str | None:
    """One line for a bad flag or value (typer's click errors); None for anything else."""
    format_message = getattr(err, "format_message", None)
    if format_message is None or not isinstance(getattr(err, "exit_code", None), int):
        return None
    ctx = getattr(err, "ctx", None)
    where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    return "error: " + " ".join(str(format_message()).split()) + where


def main() -> None:
    """Console-script entry point. Bad flags and values are one line on stderr, exit 2 (typer
    would draw them in a box under the usage text); bare commands still print their help."""
    install_signal_cleanup()
    try:
        code = build_app()(prog_name="unsample", standalone_mode=False)
    except Exception as err:
        line = _usage_error(err)
        if line is None:
            raise
        if type(err).__name__ == "NoArgsIsHelpError":  # a bare group: its help, as typer prints it
            err.show()  # type: ignore[attr-defined]
        else:
            typer.echo(line, err=True)
        sys.exit(err.exit_code)  # type: ignore[attr-defined]
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
