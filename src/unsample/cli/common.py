"""What every command shares: the common options, the error boundary, loading the model, the
checks of output paths and prompts, and the records written beside outputs.

The error boundary (`friendly`): an `unsample.errors.UnsampleError` (and `UserError`, one of
them), or an OS error on a file the user named, is one line on stderr and exit code 2; anything
else is a bug and keeps its traceback (exit 1). ``unsample --debug`` shows the traceback of an
input error too.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any

import typer

import unsample
from unsample.api import quiet
from unsample.backends.noisy_classifier import NoisyClassifier
from unsample.backends.vocabulary import prompt_problems
from unsample.core.classifier import ClassifierGuidance
from unsample.errors import InputError, SizeWarning, UnsampleError

try:  # typer >= 0.2x runs commands in its own copy of click, whose context stack is not click's
    from typer._click.globals import get_current_context
except ImportError:  # pragma: no cover - an older typer, on click itself
    from click import get_current_context

ModelOpt = Annotated[str | None, typer.Option("--model", help="Hub id, local diffusers folder, single .safetensors file "
                                             "(with --model-config) or an embedded model's name: embedded (the default), "
                                             "embedded-pixel, embedded-flow.")]
ModelConfigOpt = Annotated[str | None, typer.Option("--model-config", help="For a single-file --model: a local diffusers "
                                                    "folder of the same architecture that gives its configs.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto|cpu|cuda|mps")]
OffloadOpt = Annotated[str, typer.Option("--offload", help="none|model|sequential: keep the weights in main memory "
                                         "and move each part (model) or layer (sequential) to the GPU while it runs; "
                                         "needs --device cuda or mps.")]
DtypeOpt = Annotated[str | None, typer.Option("--dtype", help="Model dtype: float32|float16|bfloat16|float64 (inversion math stays float32+).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="No progress (no bars on a terminal, no phase lines elsewhere).")]
ClassifierOpt = Annotated[Path | None, typer.Option("--classifier", help="A noise-aware classifier (.safetensors) for "
                                                    "classifier guidance.")]
ClassLabelOpt = Annotated[str | None, typer.Option("--class-label", help="The class the classifier guides toward "
                                                  "(an index, or a name the classifier knows).")]
ClassifierScaleOpt = Annotated[float, typer.Option("--classifier-scale", help="Classifier guidance scale.")]


_show_warning = warnings.showwarning
"""Python's own way of showing a warning (the CLI shows its project's warnings as lines)."""


class UserError(InputError):
    """A problem with the command line's input: printed as one line, exit code 2."""


def _root_flag(name: str) -> bool:
    """A flag of the root command (``unsample --debug``, ``--verbose``), kept on the root click context."""
    ctx = get_current_context(silent=True)
    return bool(ctx is not None and isinstance(ctx.find_root().obj, dict) and ctx.find_root().obj.get(name))


def _debugging() -> bool:
    """``unsample --debug`` was given."""
    return _root_flag("debug")


def verbose() -> bool:
    """``unsample --verbose`` was given: the libraries' warnings and loading bars shown."""
    return _root_flag("verbose")


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The error boundary of a command (see the module docstring)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _warning_line  # restored on exit
                return fn(*args, **kwargs)
        except (UnsampleError, OSError) as err:
            if _debugging():
                raise
            if isinstance(err, UnsampleError) or isinstance(err, FileNotFoundError):
                typer.echo(f"error: {err}", err=True)
            else:  # a read-only file system, a folder without permission, a full disk
                where = f" ({err.filename})" if getattr(err, "filename", None) else ""
                typer.echo(f"error: {err.strerror or err}{where}; check the path, its permissions and the free space",
                           err=True)
            raise typer.Exit(code=2) from None

    return wrapper


def _warning_line(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None,
                  line: str | None = None) -> None:
    """The project's own warnings (a working size far above the model's) as one ``warning:`` line;
    any other warning as Python shows it."""
    if issubclass(category, SizeWarning):
        typer.echo(f"warning: {message}", err=True)
    else:
        _show_warning(message, category, filename, lineno, file, line)


def quiet_libraries() -> None:
    """Other packages' warnings and loading bars off for this process, unless ``unsample --verbose``
    (`unsample.api.quiet.quiet_libraries`; the commands keep their own progress)."""
    quiet.quiet_libraries(verbose())


def load_model(model: str | None, device: str, dtype: str | None, config: str | None = None,
               offload: str = "none") -> Any:
    """The model the command's --model, --device, --dtype, --model-config and --offload name (quietly,
    unless ``unsample --verbose``: `unsample.api.quiet.quiet_libraries`)."""
    quiet_libraries()
    if config is not None and model is None:
        raise UserError("--model-config is for a single-file --model; give the .safetensors file with --model")
    return unsample.load(model, device=device, dtype=dtype, config=config, progress=verbose(), offload=offload)


def check_output(path: Path, suffix: str) -> None:
    """An output path that ends in ``suffix``, is not a folder and whose folder exists."""
    if path.suffix.lower() != suffix:
        raise UserError(f"output {str(path)!r} must end in {suffix}")
    if path.is_dir():
        raise UserError(f"output {str(path)!r} is a folder; give a file name ending in {suffix}")
    if not path.parent.resolve().is_dir():
        raise UserError(f"output folder {str(path.parent)!r} does not exist; create it first")


def inversion_record(inv: Any) -> dict[str, Any]:
    """The inversion's metadata, as every sidecar records it."""
    return {"inversion": inv.metadata()}


def classifier_guidance_from(path: Path | None, label: str | None, scale: float, flag: str = "--class-label") -> ClassifierGuidance | None:
    """Classifier guidance from the CLI's flags (None without --classifier); checked before the model loads."""
    if path is None:
        if label is not None:
            raise UserError(f"{flag} needs --classifier (the noise-aware classifier to guide with)")
        return None
    if label is None:
        raise UserError(f"--classifier needs {flag} (the class to guide toward)")
    return NoisyClassifier.load(path).guidance(label, scale)


def sample_record(sample: Any, m: Any, start: float, kind: str, source: str) -> dict[str, Any]:
    """What a replay or an edit cost, for the sidecar."""
    return {
        "command": kind,
        "input": source,
        "model": m.name,
        "prompt": sample.prompt,
        "guidance": sample.guidance,
        "start_step": sample.start_step,
        "nfe": sample.nfe,
        "branches": sample.branches,
        "network_evaluations": sample.network_evaluations,
        "model_calls": sample.model_calls,
        "sampling_seconds": round(sample.seconds, 4),
        "total_seconds": round(time.perf_counter() - start, 4),
    }


def check_words(m: Any, prompts: list[str], allow: bool) -> None:
    """Refuse prompts with words the model does not know, unless allowed (then say so in one line); each
    distinct prompt is checked once."""
    for prompt in dict.fromkeys(p for p in prompts if p):
        overflow, _, unknown = prompt_problems(m, prompt)
        if overflow is not None:
            raise UserError(overflow)
        if unknown is None:
            continue
        if not allow:
            raise UserError(f"{unknown}; rephrase, or pass --allow-unknown-words to go on without them")
        typer.echo(f"warning: {unknown}", err=True)


def csv_values(text: str, kind: type) -> tuple:
    """``\"1,2\"`` -> ``(1, 2)`` of ``kind``; a one-line error otherwise."""
    try:
        return tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserError(f"{text!r} is not a comma-separated list of {kind.__name__} values") from None
