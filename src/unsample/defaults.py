"""Defaults of an edit: the values `unsample.editing.spec.EditSpec` declares for its fields, and
through it the API's, the CLI's, the page's and the batch manifest's (no imports: cheap to read).

Chosen from the edit bench's figures (docs/benchmarks.md, "Defaults"): the best combination of
method, guidance, mask and start step at no more than 1.5x the network evaluations of a plain
DDIM prompt swap.
"""

EDIT_METHOD = "edict"
"""Inversion method when an image is edited directly (exact, so the edit starts from the image's own noise)."""
EDIT_STEPS = 36
"""Steps when an image is edited directly: EDICT's 2 evaluations per step at 36 steps, with the mask,
cost 256 network evaluations (145 batched calls), within 1.5x a 50-step DDIM prompt swap's 200 (100)."""
INVERSION_GUIDANCE = 1.0
"""CFG of the inversion: unguided inversion drifts least and leaves the least image structure in the noise."""
EDIT_GUIDANCE = 5.0
"""CFG of the edit: a text-guided edit needs guidance (at 1 the target prompt barely acts)."""
EDIT_MASK = "noise"
"""DiffEdit's mask from the two prompts' noise predictions; outside it the edit keeps the inversion."""
EDIT_MASK_RULE = "otsu"
"""How the noise map is thresholded: Otsu's split rather than DiffEdit's 1.5 x mean, which cannot
select a region larger than 2/3 of the image (a background edit)."""
EDIT_MASK_SMOOTH = 1
"""Radius (latent cells) of the box filter applied to the noise map first, so textures stay whole."""
EDIT_START_FRACTION = 0.0
"""Where sampling resumes, as a fraction of the steps (0 = from the inverted noise)."""
BATCH_SIZE = 8
"""Jobs run through the network together by `unsample batch` (measured on the embedded model; see
docs/batch.md): larger batches gained little more on this 2-core machine."""
MAX_ROWS = 40
"""Most rows of one network call in `unsample batch` (`unsample.core.rows`): larger (merged) calls
are split. 40 is the largest call one default edit makes alone (the noise mask's 2 prompts x 20
draws), so a batch's largest call is no larger than one job's and its peak memory stays near one
job's (measured: docs/memory.md)."""
FLOWEDIT_STEPS = 50
"""FlowEdit's steps (the paper's SD3 setting, T = 50)."""
FLOWEDIT_START_STEP = 17
"""Steps skipped before FlowEdit starts (the paper's n_max = 33 of 50 for SD3)."""
FLOWEDIT_SOURCE_GUIDANCE = 3.5
"""CFG of the source prompt's branch in FlowEdit (the paper's SD3 setting)."""
FLOWEDIT_TARGET_GUIDANCE = 13.5
"""CFG of the target prompt's branch in FlowEdit (the paper's SD3 setting)."""
REPRESENTABLE_PSNR = 25.0
"""The autoencoder round-trip PSNR (dB) below which an image is said to be beyond the model
(`unsample.editing.fidelity`). Measured (docs/edit_check.md, "Representability"; the embedded UNet and
flow models share one autoencoder): 1100 in-distribution shapes scenes keep 28.2-42.5 dB, 20 of the
21 pictures in scikit-image's wheel 7.8-24.3 dB (the cat, chelsea: 18.4; the moon 27.0). 25 dB leaves
3.2 dB below the worst scene; the pixel model's round trip is lossless and never warns."""
PASTE_SEAM = 1
"""Seam width of paste-back in pixels (`unsample.editing.paste`): the decoded edit fades into the input's
own pixels over this many pixels inside the mask (0 = a hard cut). Chosen on the edit bench (docs/edit_check.md,
"Paste-back"; the embedded model, 64 px): the only width whose seam band is closer to the exact target pasted than
decoded (29.70 vs 28.78 dB; 2 px: 26.73 vs 26.85, 4 px: 22.81 vs 24.50), with the target PSNR of a hard cut
(27.01 vs 27.03 dB)."""
PASTE_SEAM_MAX = 64
"""The widest seam an edit takes (pixels)."""
