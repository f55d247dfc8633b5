"""The one registry of inversion methods: name -> `Method`.

Every module in ``unsample.methods`` that defines a module-level ``METHOD`` is registered,
found on first use (not at import time). Adding a method is adding one file.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

import unsample.methods as pkg
from unsample.errors import InputError
from unsample.methods.base import Method


@cache
def _registry() -> dict[str, Method]:
    found: dict[str, Method] = {}
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if info.name in ("base", "registry"):
            continue
        module = importlib.import_module(f"{pkg.__name__}.{info.name}")
        method = getattr(module, "METHOD", None)
        if isinstance(method, Method):
            if method.name in found:
                raise RuntimeError(f"two modules register the method name {method.name!r}")
            found[method.name] = method
    return found


def available_methods() -> list[str]:
    """Registered method names, sorted."""
    return sorted(_registry())


def get_method(name: str) -> Method:
    """The method registered as ``name``; a clear error lists the others."""
    try:
        return _registry()[name]
    except KeyError:
        raise InputError(f"unknown method {name!r}; choose one of {', '.join(available_methods())}") from None


def sampler_path_methods() -> list[str]:
    """Registered methods whose trajectory is their sampler's path (`Method.trajectory_is_sampler_path`),
    sorted: the ones Direct Inversion can pull an edit's source branch back onto."""
    return [name for name in available_methods() if _registry()[name].trajectory_is_sampler_path]
