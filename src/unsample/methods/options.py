"""Parse ``KEY=VALUE`` strings into a method config's typed fields (CLI and UI share this)."""

from __future__ import annotations

import typing
from dataclasses import MISSING, dataclass, fields
from typing import Any, get_args, get_origin

from unsample.errors import InputError
from unsample.methods.base import Bounds, MethodConfig, bounds_of


def _convert(raw: str, hint: Any, key: str) -> Any:
    origin = get_origin(hint)
    if origin is typing.Literal:
        choices = get_args(hint)
        for choice in choices:
            if str(choice) == raw:
                return choice
        raise InputError(f"option {key}={raw!r} is not one of {', '.join(map(str, choices))}")
    if hint is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise InputError(f"option {key}={raw!r} is not a yes/no value; use true or false")
    if hint in (int, float):
        try:
            return hint(raw)
        except ValueError:
            raise InputError(f"option {key}={raw!r} is not a {hint.__name__}") from None
    if hint is str:
        return raw
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in get_args(hint) if a is not type(None)]
        if raw.lower() == "none" and len(args) < len(get_args(hint)):
            return None
        return _convert(raw, args[0], key)
    raise InputError(f"option {key} has a type the command line cannot set")


def parse_options(config: type[MethodConfig], pairs: list[str], method: str) -> dict[str, Any]:
    """``["precision=float64", "rho=5"]`` -> typed dict for ``config``; clear errors otherwise."""
    hints = typing.get_type_hints(config)
    known = {f.name for f in fields(config)}
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise InputError(f"option {pair!r} is not KEY=VALUE")
        if key not in known:
            raise InputError(f"method {method!r} has no option {key!r}; its options are {', '.join(sorted(known))}")
        out[key] = _convert(raw.strip(), hints[key], key)
    return out


@dataclass(frozen=True)
class OptionSpec:
    """One option of a method config, as the CLI lists it and the UI builds a control for it."""

    name: str
    kind: str
    """One of float, int, bool, str, or for a Literal its choices joined by "|"."""
    default: Any
    choices: tuple[Any, ...] = ()
    """The allowed values of a Literal option (empty otherwise)."""
    bounds: Bounds | None = None
    """The declared range of a numeric option (`unsample.methods.base.bounded`), or None."""

    @property
    def type_text(self) -> str:
        """The kind with its range, e.g. "float in (0, 1]"."""
        return f"{self.kind} {self.bounds.text()}" if self.bounds is not None else self.kind


def option_specs(config: type[MethodConfig]) -> list[OptionSpec]:
    """Every field of ``config`` with its kind, default, choices and declared bounds."""
    hints = typing.get_type_hints(config)
    rows = []
    for f in fields(config):
        hint = hints[f.name]
        choices: tuple[Any, ...] = ()
        if get_origin(hint) is typing.Literal:
            choices = get_args(hint)
            kind = "|".join(map(str, choices))
        else:
            kind = getattr(hint, "__name__", str(hint))
        default = None if f.default is MISSING else f.default
        rows.append(OptionSpec(f.name, kind, default, choices, bounds_of(f)))
    return rows


def describe_options(config: type[MethodConfig]) -> list[tuple[str, str, Any]]:
    """(name, type with its range, default) of each field, for ``unsample methods``; the UI reads
    `option_specs` (the same fields, structured)."""
    return [(spec.name, spec.type_text, spec.default) for spec in option_specs(config)]
