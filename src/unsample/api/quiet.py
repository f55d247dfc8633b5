"""Quiet by default: other packages' known warnings filtered narrowly, their loading bars only when
asked for, and the project's own progress as a bar on a terminal or one line per phase elsewhere.

* `filter_known_warnings` drops the warnings we know to be noise, each by the logger that emits it
  and a fragment of its message (`KNOWN_NOISE`); anything else a library says still shows.
* `library_bars(enabled)` turns diffusers', transformers' and the hub's progress bars ("Loading
  pipeline components", "Loading weights") off for a block and puts them back as they were after it
  (what `unsample.load(progress=False)` does).
* `quiet_libraries(verbose)` is the command line's and the web page's setting for the whole process:
  the known noise filtered, and, unless verbose, those libraries' warnings below errors and their bars off.
* `PhaseProgress` is one phase's progress (inverting, editing, a batch): a tqdm bar when stderr is a
  terminal, otherwise a single line when the phase ends, ``invert (edict): 36 steps, 2.1 s``
  (`PHASE_LINE` matches it), so a log file or a pipe gets no bar redraws.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm.auto import tqdm

KNOWN_NOISE: tuple[tuple[str, str], ...] = (
    # transformers 5 without torchvision: diffusers' pipeline modules import CLIPImageProcessor and
    # SiglipImageProcessor, and transformers falls back to their PIL versions (what they were before) with a warning
    ("transformers.utils.import_utils", "requires torchvision (not installed); falling back to"),
)
"""(logger name, message fragment) of each warning of another package that a normal run drops."""

LIBRARIES = ("diffusers", "transformers", "httpx")
"""The packages whose warnings `quiet_libraries` raises to errors unless verbose (httpx: gradio's requests)."""

PHASE_LINE = re.compile(r"^\S.* \d+ \w+, \d+\.\d s$")
"""A phase's line when stderr is not a terminal: ``DESC: N UNITs, S.S s``."""


class _DropKnown(logging.Filter):
    """Drops a logger's records whose message holds one of the fragments."""

    def __init__(self, fragments: tuple[str, ...]) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


def filter_known_warnings() -> None:
    """Install the `KNOWN_NOISE` filters (once per logger; calling again changes nothing)."""
    for name in dict.fromkeys(name for name, _ in KNOWN_NOISE):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropKnown) for f in logger.filters):
            logger.addFilter(_DropKnown(tuple(fragment for n, fragment in KNOWN_NOISE if n == name)))


@contextmanager
def library_bars(enabled: bool) -> Iterator[None]:
    """diffusers', transformers' and the hub's progress bars on or off inside the block, as before after it."""
    # heavy libraries: imported when a model loads, not when unsample is imported
    from diffusers.utils import logging as diffusers_logging
    from huggingface_hub import utils as hub_utils
    from transformers.utils import logging as transformers_logging

    before = (diffusers_logging.is_progress_bar_enabled(), transformers_logging.is_progress_bar_enabled(),
              hub_utils.are_progress_bars_disabled())
    _set_library_bars(enabled)
    try:
        yield
    finally:
        diffusers_on, transformers_on, hub_off = before
        (diffusers_logging.enable_progress_bar if diffusers_on else diffusers_logging.disable_progress_bar)()
        (transformers_logging.enable_progress_bar if transformers_on else transformers_logging.disable_progress_bar)()
        (hub_utils.disable_progress_bars if hub_off else hub_utils.enable_progress_bars)()


def _set_library_bars(enabled: bool) -> None:
    from diffusers.utils import logging as diffusers_logging  # heavy: see library_bars
    from transformers.utils import logging as transformers_logging

    (diffusers_logging.enable_progress_bar if enabled else diffusers_logging.disable_progress_bar)()
    (transformers_logging.enable_progress_bar if enabled else transformers_logging.disable_progress_bar)()


def quiet_libraries(verbose: bool = False) -> None:
    """The process-wide setting of the command line and the web page (see the module docstring)."""
    from diffusers.utils import logging as diffusers_logging  # heavy: imported by the commands that load a model
    from transformers.utils import logging as transformers_logging

    filter_known_warnings()
    if verbose:
        _set_library_bars(True)
        return
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(logging.ERROR)
    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    _set_library_bars(False)


def stderr_is_terminal() -> bool:
    """Whether stderr is an interactive terminal (a bar redraws in place) rather than a file or a pipe."""
    isatty = getattr(sys.stderr, "isatty", None)
    try:
        return bool(isatty is not None and isatty())
    except ValueError:  # a closed stream
        return False


class PhaseProgress:
    """One phase's progress: a tqdm bar on a terminal, else one `PHASE_LINE` on stderr when it ends.

    The bar exists either way (disabled off a terminal), so a tracker of tqdm bars, such as the web
    page's progress, still sees every update.
    """

    def __init__(self, total: int, desc: str, *, unit: str = "step", initial: int = 0, leave: bool = False) -> None:
        self.desc, self.unit, self.count = desc, unit, 0
        self.begin = time.perf_counter()
        self.line = not stderr_is_terminal()
        self.bar = tqdm(total=total, desc=desc, unit=unit, initial=initial, leave=leave, disable=self.line)

    def update(self, n: int = 1) -> None:
        self.count += n
        self.bar.update(n)

    def close(self, finished: bool = True) -> None:
        """End the bar; off a terminal, a finished phase writes its line (an interrupted one does not)."""
        self.bar.close()
        if self.line and finished:
            units = self.unit if self.count == 1 else self.unit + "s"
            print(f"{self.desc}: {self.count} {units}, {time.perf_counter() - self.begin:.1f} s", file=sys.stderr,
                  flush=True)
            self.line = False
