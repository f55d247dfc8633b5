"""Declared ranges of settings: one mechanism for every bound and type check.

Method options (`unsample.methods.base.MethodConfig`), the edit specification
(`unsample.editing.spec.EditSpec`), the API's guidance arguments and the batch manifest's fields
all declare their ranges with `Bounds` and check them with `Bounds.check`, which raises the one-line
`unsample.errors.InputError` the edges show.
"""

from __future__ import annotations

import math
from dataclasses import Field, dataclass, field
from typing import Any

from unsample.errors import InputError

__all__ = ["BOUNDS_KEY", "Bounds", "bounded", "bounds_of", "check_kind"]


@dataclass(frozen=True)
class Bounds:
    """The range a numeric option must lie in: ``low`` / ``high`` (None: unbounded on that side),
    each end closed unless marked open, e.g. (0, 1] is ``Bounds(0, 1, low_open=True)``."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    """The option is an int (a float or a bool is refused)."""
    note: str = ""
    """Said after the range in the error, e.g. what 0 means."""
    kind: str = ""
    """What the value is called in the error ("a finite number "); by default "a number " when it
    is not one, "an integer " for an integer option, nothing otherwise."""

    def contains(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))

    def text(self) -> str:
        """The range as a reader writes it: "in (0, 1]", ">= 0", "> 0", "<= 1"."""
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return "any number"

    def check(self, name: str, value: Any) -> None:
        """One-line ValueError unless ``value`` is a number (an int for an integer option) in range."""
        number = not isinstance(value, bool) and isinstance(value, int if self.integer else (int, float))
        what = self.kind or ("an integer " if self.integer else "" if number else "a number ")
        if not number or not math.isfinite(value) or not self.contains(value):
            raise InputError(f"{name}={value!r} must be {what}{self.text()}{f' ({self.note})' if self.note else ''}")


BOUNDS_KEY = "bounds"
"""The key of a config field's ``metadata`` that holds its `Bounds` (see `bounded`)."""


def bounded(
    default: float, *, low: float | None = None, high: float | None = None, low_open: bool = False,
    high_open: bool = False, note: str = "",
) -> Any:
    """A config field with a declared range, checked by `MethodConfig` and read by the CLI and the UI.

    ``bounded(0.8, low=0, high=1, low_open=True)`` is a float in (0, 1] defaulting to 0.8; an int
    default makes an integer option.
    """
    integer = isinstance(default, int) and not isinstance(default, bool)
    bounds = Bounds(low, high, low_open, high_open, integer, note)
    bounds.check("default", default)
    return field(default=default, metadata={BOUNDS_KEY: bounds})


def bounds_of(f: Field[Any]) -> Bounds | None:
    """The `Bounds` a config field declares, or None."""
    found = f.metadata.get(BOUNDS_KEY)
    return found if isinstance(found, Bounds) else None


def check_kind(name: str, value: Any, kinds: tuple[type, ...]) -> None:
    """One-line InputError unless ``value`` is one of ``kinds`` (a bool is never a number)."""
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        names = " or ".join("a number" if k is float else k.__name__ for k in kinds if not (k is int and float in kinds))
        raise InputError(f"{name} must be {names}, got {value!r}")
