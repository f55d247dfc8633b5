"""The public API: load a model, invert an image, reconstruct it, edit it.

    model = unsample.load()                      # the embedded default, or a hub id / folder
    inv = unsample.invert(model, "cat.png", "a photo of a cat", method="ddim", steps=50)
    image = unsample.reconstruct(model, inv)
    edited = unsample.edit(model, inv, "a photo of a dog", start_step=10)
    result = unsample.edit(model, "cat.png", EditSpec(target_prompt="a dog", source_prompt="a cat"), output="result")
"""

from unsample.api.common import (
    MAX_GUIDANCE,
    ImageSource,
    Output,
    UnknownWords,
    check_guidance,
    check_prompt_words,
    check_prompts,
    prepare_image,
)
from unsample.api.editing import MaskSpec, edit, edit_spec
from unsample.api.flowediting import flowedit
from unsample.api.inverting import invert, reconstruct, replay
from unsample.api.loading import load
from unsample.api.results import EditSample, Sample
from unsample.editing.spec import EditSpec

_check_guidance = check_guidance
"""The name this check had before the API became a package (kept for callers)."""

__all__ = ["MAX_GUIDANCE", "EditSample", "EditSpec", "ImageSource", "MaskSpec", "Output", "Sample", "UnknownWords",
           "check_guidance", "check_prompt_words", "check_prompts", "edit", "edit_spec", "flowedit", "invert", "load",
           "prepare_image", "reconstruct", "replay"]
