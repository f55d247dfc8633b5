"""Built-in scenes for the page, from outside the library: the ``unsample.scenes`` entry point group.

A scene provider gives `SceneProvider.captions` (the scenes the page offers), ``render(caption,
size, seed)`` (one of them as a PIL image) and ``suggest(vocabulary, image)`` (the caption a
model with that vocabulary should be given for ``image``, or None). The lab registers the shapes
world's (``unsample_lab.ui_scenes:SCENES`` in pyproject.toml); the library only reads the
installed metadata and loads what is named there, so it never imports the lab. With no provider
installed the page hides the scene picker and offers no source prompt (`NO_SCENES`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Protocol, runtime_checkable

from PIL import Image

from unsample.errors import InputError

SCENES_GROUP = "unsample.scenes"
"""The entry point group of scene providers (each entry names an object, not a factory)."""

log = logging.getLogger(__name__)


@runtime_checkable
class SceneProvider(Protocol):
    """What the page needs of a set of built-in scenes."""

    @property
    def captions(self) -> Sequence[str]:
        """The scenes the page offers, as their captions."""
        ...

    def render(self, caption: str, size: int, seed: int = 0) -> Image.Image:
        """The scene of ``caption`` as an RGB image of ``size`` x ``size`` pixels (its layout seeded)."""
        ...

    def suggest(self, vocabulary: list[str] | None, image: Image.Image) -> str | None:
        """A source prompt for ``image`` for a model that knows ``vocabulary`` (None: an open
        vocabulary), or None when the provider has nothing to say about it."""
        ...


@dataclass(frozen=True)
class NoScenes:
    """The provider when none is installed: no captions, no suggestion."""

    captions: tuple[str, ...] = ()

    def render(self, caption: str, size: int, seed: int = 0) -> Image.Image:
        raise InputError(f"no built-in scenes are installed, so there is no scene {caption!r}; upload an image "
                         f"(scenes come from a package registering the {SCENES_GROUP!r} entry point, e.g. the lab)")

    def suggest(self, vocabulary: list[str] | None, image: Image.Image) -> str | None:
        return None


NO_SCENES = NoScenes()


def registered_entry_points() -> list[metadata.EntryPoint]:
    """The ``unsample.scenes`` entry points of the installed distributions, by name."""
    return sorted(metadata.entry_points(group=SCENES_GROUP), key=lambda entry: entry.name)


def installed_scenes(entry_points: Iterable[metadata.EntryPoint] | None = None) -> SceneProvider:
    """The first provider (by entry point name) of ``entry_points`` (default: the installed ones,
    `registered_entry_points`) that loads and has what `SceneProvider` says; `NO_SCENES` when none does.

    One that fails to load is skipped with its traceback in the log: the page works without scenes."""
    entries = registered_entry_points() if entry_points is None else sorted(entry_points, key=lambda e: e.name)
    for entry in entries:
        try:
            provider = entry.load()
        except Exception:  # a broken plug-in costs its scenes, not the page
            log.exception("the scene provider %s = %s did not load; skipped", entry.name, entry.value)
            continue
        if isinstance(provider, SceneProvider):
            return provider
        log.error("the scene provider %s = %s is a %s, without captions, render and suggest; skipped",
                  entry.name, entry.value, type(provider).__name__)
    return NO_SCENES
