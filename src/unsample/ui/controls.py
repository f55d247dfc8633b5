"""A method's option controls, described from its config dataclass (one source of truth with the CLI).

`option_specs` (``unsample.methods.options``) gives each field's kind, default, choices and
declared bounds; this module turns them into control descriptions the layout renders, and the
values the page sends back into the method's options, checked by the config class itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from unsample.errors import InputError
from unsample.methods.options import OptionSpec, option_specs
from unsample.methods.registry import available_methods, get_method

Widget = Literal["dropdown", "checkbox", "integer", "number", "text"]


@dataclass(frozen=True)
class OptionControl:
    """One control: which widget, its label, default and the help line with the range."""

    method: str
    name: str
    widget: Widget
    default: Any
    choices: tuple[Any, ...]
    info: str

    @property
    def elem_id(self) -> str:
        """The page element's id, e.g. ``option-edict-p``."""
        return f"option-{self.method}-{self.name}".replace("_", "-")


def _widget(spec: OptionSpec) -> Widget:
    if spec.choices:
        return "dropdown"
    return {"bool": "checkbox", "int": "integer", "float": "number"}.get(spec.kind, "text")  # type: ignore[return-value]


def method_controls(method: str) -> list[OptionControl]:
    """The controls of ``method``'s options, in the config's field order."""
    rows = []
    for spec in option_specs(get_method(method).config):
        info = f"{spec.type_text}, default {spec.default}"
        if spec.bounds is not None and spec.bounds.note:
            info += f" ({spec.bounds.note})"
        rows.append(OptionControl(method, spec.name, _widget(spec), spec.default, tuple(spec.choices), info))
    return rows


def methods_for(schedule: Any) -> list[str]:
    """The registered methods that run on a model with this schedule (the others refuse it)."""
    return [name for name in available_methods()
            if get_method(name).refuses is None or not get_method(name).refuses(schedule)]  # type: ignore[misc]


def options_from_values(method: str, values: dict[str, Any]) -> dict[str, Any]:
    """The page's values of ``method``'s controls -> its options, checked by its config class.

    Only options that differ from the default are returned (what the CLI's ``--option`` would
    say). A value out of range raises the config's one-line ValueError, prefixed by the method.
    """
    spec = get_method(method)
    controls = {c.name: c for c in method_controls(method)}
    unknown = sorted(set(values) - set(controls))
    if unknown:
        raise InputError(f"method {method!r} has no option(s) {', '.join(unknown)}")
    options: dict[str, Any] = {}
    for name, value in values.items():
        control = controls[name]
        if value is None or (isinstance(value, str) and not value.strip() and control.widget != "text"):
            raise InputError(f"method {method!r}: option {name} is empty; give {control.info}")
        if control.widget == "number" and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if control.widget == "integer" and isinstance(value, float) and value.is_integer():
            value = int(value)
        if value != control.default:
            options[name] = value
    try:
        spec.config.from_options(options, method)
    except ValueError as err:
        raise InputError(f"method {method!r}: {err}") from None
    return options
