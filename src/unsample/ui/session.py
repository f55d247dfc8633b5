"""One browser session's state: its image, its folder of outputs, and its cache of inversions.

The cache is keyed by what decides an inversion: the photo's pixels (as uploaded), the prompt,
the method and its options, the steps, the guidance and how the photo is sized for the model. An edit of a
cached inversion runs the edit only.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from unsample.inversion import Inversion
from unsample.ui.settings import CACHED_INVERSIONS


def image_digest(image: Image.Image) -> str:
    """SHA-256 of an RGB image's size and pixels: the same picture gives the same key."""
    rgb = image.convert("RGB")
    return hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode() + rgb.tobytes()).hexdigest()


@dataclass(frozen=True)
class InversionKey:
    """What decides an inversion (the model is the app's, one per server)."""

    image: str
    prompt: str
    method: str
    options: tuple[tuple[str, Any], ...]
    steps: int
    guidance: float
    fit: str
    """How the photo is sized for the model (`EditSpec.fit`): another fit is another working image."""

    @classmethod
    def of(cls, image: Image.Image, prompt: str, method: str, options: dict[str, Any], steps: int,
           guidance: float, fit: str) -> InversionKey:
        return cls(image_digest(image), prompt, method, tuple(sorted(options.items())), int(steps), float(guidance),
                   fit)


@dataclass
class CachedInversion:
    """An inversion, its file, and its reconstruction once made (PSNR against the input, cost)."""

    inversion: Inversion
    file: Path
    reconstruction: Image.Image | None = None
    psnr_db: float | None = None
    reconstruction_nfe: int = 0
    reconstruction_seconds: float = 0.0
    edits: int = 0
    """Edits made from this inversion so far (the first one may have inverted it)."""


@dataclass
class SessionState:
    """Per-session: the current input image, the outputs folder, the last inversions and edit."""

    folder: Path
    image: Image.Image | None = None
    image_name: str = ""
    cache: OrderedDict[InversionKey, CachedInversion] = field(default_factory=OrderedDict)
    last_key: InversionKey | None = None
    counter: int = 0

    @classmethod
    def create(cls, root: Path) -> SessionState:
        """A new session with its own folder under ``root`` (the app's temporary folder)."""
        root.mkdir(parents=True, exist_ok=True)
        return cls(folder=Path(tempfile.mkdtemp(prefix="session-", dir=root)))

    def next_path(self, stem: str, suffix: str) -> Path:
        """A fresh file name in the session's folder, e.g. ``edit-3.png``."""
        self.counter += 1
        return self.folder / f"{stem}-{self.counter}{suffix}"

    def lookup(self, key: InversionKey) -> CachedInversion | None:
        found = self.cache.get(key)
        if found is not None:
            self.cache.move_to_end(key)
        return found

    def store(self, key: InversionKey, entry: CachedInversion) -> None:
        """Keep ``entry``, dropping the least recently used beyond `CACHED_INVERSIONS`."""
        self.cache[key] = entry
        self.cache.move_to_end(key)
        while len(self.cache) > CACHED_INVERSIONS:
            self.cache.popitem(last=False)

    def close(self) -> None:
        """Forget the inversions and remove the session's folder (gradio calls this when it ends)."""
        self.cache.clear()
        shutil.rmtree(self.folder, ignore_errors=True)


def close_session(state: Any) -> None:
    """gr.State's delete callback: close a `SessionState` (anything else is ignored)."""
    if isinstance(state, SessionState):
        state.close()
