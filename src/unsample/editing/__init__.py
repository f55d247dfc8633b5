"""Editing on top of an inversion: two-branch edits, prompt-to-prompt attention control, img2img.

`unsample.editing.attention` holds prompt-to-prompt control through diffusers attention
processors (`AttentionControl`, `PromptToPrompt`); `unsample.editing.tokens` the token
alignment it uses.
"""

from unsample.editing.attention import AttentionControl, PromptToPrompt

__all__ = ["AttentionControl", "PromptToPrompt"]
