"""Caption grammar, its parser, and the train / held-out split of the caption space.

Grammar (every word comes from `VOCABULARY`)::

    caption := object ["and" object] "on" "a" TEXTURE BACKGROUND_COLOR "background"
    object  := "a" SIZE OBJECT_COLOR SHAPE

e.g. "a small blue star and a large yellow square on a plain black background". Objects are
listed left to right, so one scene has exactly one caption. `parse_caption` accepts exactly this
grammar (case and runs of whitespace aside) and also the world's rules (an object colour must
differ from the background's; two objects must differ), raising ValueError otherwise.

Split: a caption is held out when the SHA-256 of `SPLIT_SALT` and its *canonical key* falls in
the lowest `HELD_OUT_FRACTION` of the hash range. The key lists the objects sorted
alphabetically, so "A and B" and "B and A" (the same content, mirrored) land in the same split,
and training never sees a held-out combination in either order.
"""

from __future__ import annotations

import hashlib

from unsample.errors import InputError
from unsample_lab.shapes.scene import MAX_OBJECTS, ObjectSpec, Scene, SceneSpec
from unsample_lab.shapes.vocabulary import (
    BACKGROUND_COLORS,
    OBJECT_COLORS,
    SHAPES,
    SIZES,
    TEXTURES,
)

HELD_OUT_FRACTION = 0.1
# Part of the hashed text. Changing it reshuffles the split. With this value the captions used
# in the project's demos ("a large red circle on a striped blue background", "... on a striped
# gray background", "a small blue star and a large yellow square on a plain black background")
# are training captions; a test pins that.
SPLIT_SALT = "shapes-split-v1"
SPLITS: tuple[str, ...] = ("train", "heldout", "any")


def caption(scene: Scene | SceneSpec) -> str:
    """The caption of a scene or spec (a Scene's objects are listed left to right)."""
    spec = scene.spec if isinstance(scene, Scene) else scene
    if not isinstance(spec, SceneSpec):
        raise TypeError(f"caption() takes a Scene or SceneSpec, got {type(scene).__name__}")
    objects = " and ".join(f"a {o.size} {o.color} {o.shape}" for o in spec.objects)
    return f"{objects} on a {spec.texture} {spec.background} background"


def parse_caption(text: str) -> SceneSpec:
    """Parse a caption of the grammar above into its `SceneSpec`; ValueError if it is not one."""
    if not isinstance(text, str):
        raise TypeError(f"parse_caption() takes a str, got {type(text).__name__}")
    words = text.lower().split()
    position = 0

    def take(allowed: tuple[str, ...], what: str) -> str:
        nonlocal position
        if position >= len(words):
            raise InputError(f"caption {text!r} ends early: expected {what} after word {position}")
        word = words[position]
        if word not in allowed:
            raise InputError(
                f"caption {text!r}: expected {what} ({', '.join(allowed)}) "
                f"at word {position + 1}, got {word!r}"
            )
        position += 1
        return word

    objects: list[ObjectSpec] = []
    while True:
        take(("a",), "'a'")
        size = take(SIZES, "a size")
        color = take(OBJECT_COLORS, "an object colour")
        shape = take(SHAPES, "a shape")
        objects.append(ObjectSpec(size, color, shape))
        if len(objects) == MAX_OBJECTS:
            take(("on",), "'on'")
            break
        if take(("and", "on"), "'and' or 'on'") == "on":
            break
    take(("a",), "'a'")
    texture = take(TEXTURES, "a texture")
    background = take(BACKGROUND_COLORS, "a background colour")
    take(("background",), "'background'")
    if position != len(words):
        extra = " ".join(words[position:])
        raise InputError(f"caption {text!r}: unexpected words after 'background': {extra!r}")
    try:
        return SceneSpec(tuple(objects), background, texture)
    except ValueError as error:
        raise InputError(
            f"caption {text!r} is grammatical but not a valid scene: {error}"
        ) from None


def canonical_key(spec: SceneSpec) -> str:
    """An order-free text key of a spec: the objects sorted, then texture and background."""
    objects = sorted(f"{o.size} {o.color} {o.shape}" for o in spec.objects)
    return " | ".join(objects) + f" || {spec.texture} {spec.background}"


def is_held_out(text: str | SceneSpec | Scene) -> bool:
    """Whether a caption (or the caption of a spec or scene) belongs to the held-out split."""
    if isinstance(text, Scene):
        spec = text.spec
    elif isinstance(text, SceneSpec):
        spec = text
    else:
        spec = parse_caption(text)
    digest = hashlib.sha256(f"{SPLIT_SALT}|{canonical_key(spec)}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") < HELD_OUT_FRACTION * 2.0**64


def in_split(spec: SceneSpec | Scene, split: str) -> bool:
    """Whether a spec or scene belongs to `split` ("train", "heldout" or "any")."""
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; expected one of: {', '.join(SPLITS)}")
    if split == "any":
        return True
    return is_held_out(spec) == (split == "heldout")
