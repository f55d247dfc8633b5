"""The recipe ladder: the edits `unsample.edit` tries, in order, until the edit check says one took.

Every rung resumes the same inversion, so a rung changes only settings of the edit itself (the
prompt-to-prompt control, the mask's growth, the guidance, the mask source), never the
inversion's (method, steps, inversion guidance, options, seed). The first rung is the edit as asked
(``{}``: the user's own settings, today's default when none are given); the next rungs were chosen
on the edit bench (docs/edit_check.md, "The ladder"): each is the one that turned most of the
remaining failures of the rungs before it into successes. A rung that needs what a model does not
declare (prompt-to-prompt control needs hookable cross-attention) is skipped on that model.

The ladder is data here, with the edit specification: the API, the CLI (``--recipe NAME``,
``--no-escalate``, ``--budget``), the page, batch and the bench read this one table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

EDIT_ONLY: frozenset[str] = frozenset({
    "guidance", "control", "cross_steps", "self_steps", "mask", "mask_dilate", "blend_start", "mask_rule",
    "mask_smooth", "mask_strength", "mask_ratio", "mask_threshold", "start_step"})
"""The settings a rung may change: the edit's, not the inversion's it resumes."""


@dataclass(frozen=True)
class Rung:
    """One recipe of the ladder: a name and the settings it changes on the edit as asked."""

    name: str
    changes: Mapping[str, Any] = field(default_factory=dict)
    why: str = ""

    def __post_init__(self) -> None:
        outside = sorted(set(self.changes) - EDIT_ONLY)
        if outside:
            raise ValueError(f"rung {self.name!r} changes {', '.join(outside)}: a rung changes only the edit's settings")
        object.__setattr__(self, "changes", MappingProxyType(dict(self.changes)))

    @property
    def needs_attention_control(self) -> bool:
        """Whether the rung needs a model whose cross-attention the editor can hook."""
        return self.changes.get("control", "none") != "none" or self.changes.get("mask") in ("attention", "intersect")


LADDER: tuple[Rung, ...] = (
    Rung("as-asked", {}, "the edit with the settings given (the defaults when none are)"),
    Rung("no-mask", {"mask": "none"}, "every cell may change"),
    Rung("p2p", {"control": "replace", "mask": "none"}, "prompt-to-prompt replace, every cell may change"),
)
"""The rungs in the order they are tried (the first is the edit as asked)."""

DEFAULT_BUDGET = 1024
"""The network evaluations an escalating edit's rungs may spend in all (their edits, masks and checks; the
inversion they share is not counted): room for every rung of the ladder after a default first rung."""


def rung_names() -> tuple[str, ...]:
    return tuple(r.name for r in LADDER)


def get_rung(name: str) -> Rung:
    for rung in LADDER:
        if rung.name == name:
            return rung
    raise KeyError(name)


def rungs_for(recipe: str | None, escalate: bool, attention_control: bool) -> list[Rung]:
    """The rungs an edit tries: the one ``recipe`` pins, or the ladder (only its first rung without
    ``escalate``), less the rungs the model cannot run (``attention_control``: it can hook
    cross-attention). The first rung always runs."""
    if recipe is not None:
        return [get_rung(recipe)]
    rungs = [LADDER[0]] + [r for r in LADDER[1:] if attention_control or not r.needs_attention_control]
    return rungs if escalate else rungs[:1]


@dataclass(frozen=True)
class Attempt:
    """One rung an edit ran: its name, the check's verdict and score, and its cost."""

    rung: str
    took: bool | None
    score: float | None
    evaluations: int

    def to_json(self) -> dict[str, Any]:
        return {"rung": self.rung, "took": self.took, "score": self.score, "evaluations": self.evaluations}


@dataclass(frozen=True)
class LadderResult:
    """What the ladder did: the rungs tried in order, the one that took (None: none did, the
    best attempt was kept: the best-scored of those that moved toward the target), the rungs left
    untried for the budget, those that could not run, the budget and the spend."""

    attempts: tuple[Attempt, ...]
    succeeded: str | None
    kept: str
    untried: tuple[str, ...]
    skipped: tuple[str, ...]
    """Later rungs that could not run on these prompts, each with the reason (e.g. a word-for-word
    prompt-to-prompt replace on prompts of different lengths)."""
    budget: int
    spent: int

    def to_json(self) -> dict[str, Any]:
        return {"attempts": [a.to_json() for a in self.attempts], "succeeded": self.succeeded, "kept": self.kept,
                "untried": list(self.untried), "skipped": list(self.skipped), "budget": self.budget,
                "spent": self.spent}

    def summary(self) -> str:
        """The rungs tried, for a warning line: "as-asked 0.12, no-mask -0.30"."""
        return ", ".join(f"{a.rung} {a.score:+.2f}" if a.score is not None else a.rung for a in self.attempts)


def verdict_line(took: bool, score: float, stderr: float, threshold: float, ladder: LadderResult | None) -> str:
    """The one line every surface prints about the check and the ladder: ``check: the edit took
    (...)`` or ``warning: the edit did not take (...)`` naming what was tried."""
    figures = f"score {score:+.3f} +/- {stderr:.3f}, threshold {threshold:g}"
    tried = len(ladder.attempts) if ladder is not None else 1
    if took:
        if ladder is None or tried == 1:
            return f"check: the edit took ({figures})"
        return (f"check: the edit took with recipe '{ladder.kept}' after {tried - 1} that did not ({figures}; "
                f"tried {ladder.summary()}; {ladder.spent} network evaluations)")
    if ladder is None or tried == 1 and not ladder.untried:
        return f"warning: the edit did not take ({figures}); the image is the edit as asked"
    left = f"; not tried within the budget of {ladder.budget}: {', '.join(ladder.untried)}" if ladder.untried else ""
    return (f"warning: the edit did not take with any recipe (tried {ladder.summary()}{left}); kept the best, "
            f"'{ladder.kept}' ({figures})")
