"""unsample: invert diffusion models and edit real images with text.

The public names are imported on first use, so ``import unsample`` loads no model and no
heavy library.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
__all__ = ["EditSpec", "Inversion", "Model", "available_methods", "edit", "flowedit", "invert", "load", "reconstruct", "replay"]

_LAZY = {
    "load": "unsample.api",
    "invert": "unsample.api",
    "reconstruct": "unsample.api",
    "edit": "unsample.api",
    "flowedit": "unsample.api",
    "replay": "unsample.api",
    "Inversion": "unsample.inversion",
    "EditSpec": "unsample.editing.spec",
    "Model": "unsample.backends.base",
    "available_methods": "unsample.methods.registry",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'unsample' has no attribute {name!r}")
