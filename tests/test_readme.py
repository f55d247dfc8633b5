"""The README as a doctest: every ```bash, ```sh and ```python block runs, in order, in one fresh
folder that holds what ``make demo`` leaves there (``out/demo/source.png``), with this checkout's
``unsample`` first on the PATH; the files its commands name as outputs must exist afterwards.

A block is left out only when its first line is ``# needs: REASON[, REASON] [(why)]`` with reasons
from `REASONS`, and each reason must show in the block (a hub id, a ``make`` target, ``unsample ui``),
so a mark cannot hide a command that would run. An unmarked block that shows one of them fails, and
so does a fence that is neither a command block nor marked ``text``.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.test_quiet import needs_embedded, scene_image

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_LINES = 150

RUN = {"bash": ["bash", "-e", "-o", "pipefail", "-c"], "sh": ["sh", "-e", "-c"], "python": [sys.executable, "-c"]}
"""How a block of each language runs (its text is the last argument)."""

REASONS = {
    "hub": re.compile(r"""(--model\s+|load\(\s*["'])[\w.-]+/[\w.-]+"""),
    "make": re.compile(r"^\s*make\b", re.MULTILINE),
    "server": re.compile(r"\bunsample ui\b"),
}
"""Why a block may be left out, and what in the block shows that reason: a model from the hub (an
``owner/name`` id), the Makefile's targets (CI runs ``make test`` itself), a server that runs until stopped."""

MARK = re.compile(r"^# needs: ([a-z]+(?:, [a-z]+)*)(?: \(.*\))?$")
OUTPUTS = re.compile(r"""(?:\s-o|--output)\s+(\S+)|\.save\(\s*["']([^"']+)["']""")


@dataclass(frozen=True)
class Block:
    lang: str
    text: str
    line: int  # of the opening fence, 1-based

    @property
    def reasons(self) -> tuple[str, ...]:
        """The reasons of its ``# needs:`` mark (empty when it has none)."""
        first = self.text.split("\n", 1)[0]
        found = MARK.match(first)
        return tuple(found.group(1).split(", ")) if found else ()


def blocks(text: str) -> list[Block]:
    """The fenced blocks of a markdown text (fences at the start of a line)."""
    found, lang, start, body = [], None, 0, []
    for number, line in enumerate(text.splitlines(), 1):
        if lang is None and line.startswith("```"):
            lang, start, body = line[3:].strip(), number, []
        elif lang is not None and line.strip() == "```":
            found.append(Block(lang, "\n".join(body) + "\n", start))
            lang = None
        elif lang is not None:
            body.append(line)
    assert lang is None, f"the fence opened on line {start} is not closed"
    return found


def problems(block: Block) -> list[str]:
    """What is wrong with a block's marking (nothing for a block that runs or is rightly left out)."""
    where = f"the block on line {block.line}"
    if block.lang == "text":
        return []
    if block.lang not in RUN:
        return [f"{where} is ```{block.lang or '(no language)'}: mark it bash, sh, python or text"]
    first = block.text.split("\n", 1)[0]
    if first.startswith("# needs:") and not block.reasons:
        return [f"{where}: {first!r} is not '# needs: REASON[, REASON] (why)'"]
    wrong = [f"{where}: unknown reason {r!r} (known: {', '.join(REASONS)})" for r in block.reasons if r not in REASONS]
    if wrong:
        return wrong
    shown = {r for r, pattern in REASONS.items() if pattern.search(block.text)}
    return [f"{where} is marked '{r}' but shows no sign of it; let it run" for r in sorted(set(block.reasons) - shown)] \
        + [f"{where} needs '# needs: {r}' on its first line" for r in sorted(shown - set(block.reasons))]


def runnable(text: str) -> list[Block]:
    return [b for b in blocks(text) if b.lang in RUN and not b.reasons]


def test_the_readme_is_short_and_every_block_runs_or_says_why_not() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= MAX_LINES
    assert [p for b in blocks(text) for p in problems(b)] == []
    assert runnable(text), "no block of the README runs"


def test_the_marking_rules_catch_what_they_should() -> None:
    sample = ("```bash\nmake test\n```\n```\nplain\n```\n```bash\n# needs: hub\nunsample methods\n```\n"
              "```python\n# needs: moon\nx = 1\n```\n```python\n# needs: hub (big)\nunsample.load(\"org/model\")\n```\n"
              "```bash\nunsample ui --port 1\n```\n```text\nmake test\n```\n```sh\nunsample methods\n```\n")
    found = [p for b in blocks(sample) for p in problems(b)]
    assert found == ["the block on line 1 needs '# needs: make' on its first line",
                     "the block on line 4 is ```(no language): mark it bash, sh, python or text",
                     "the block on line 7 is marked 'hub' but shows no sign of it; let it run",
                     "the block on line 11: unknown reason 'moon' (known: hub, make, server)",
                     "the block on line 19 needs '# needs: server' on its first line"]
    assert [b.line for b in runnable(sample)] == [1, 19, 25]


@pytest.mark.subprocess
@pytest.mark.model
@needs_embedded
def test_the_readme_commands_run(tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "out" / "demo").mkdir(parents=True)
    scene_image(work / "out" / "demo" / "source.png")  # what `make demo` writes there
    shim = tmp_path / "bin" / "unsample"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m unsample.cli "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    env = {**os.environ, "PATH": os.pathsep.join([str(shim.parent), os.environ.get("PATH", "")]),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "HF_HUB_OFFLINE": "1"}
    for block in runnable(README.read_text()):
        r = subprocess.run([*RUN[block.lang], block.text], cwd=work, env=env, capture_output=True, text=True, timeout=600,
                           check=False)
        assert r.returncode == 0, f"README line {block.line}:\n{block.text}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
        for match in OUTPUTS.finditer(block.text):
            name = match.group(1) or match.group(2)
            assert (work / name).is_file(), f"README line {block.line}: {name} was not written"
