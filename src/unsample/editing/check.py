"""The edit check: the model judges its own edit, with no extra weights, on every family.

A diffusion model is a classifier of its own prompts (Li et al., "Your diffusion model is secretly
a zero-shot classifier", ICCV 2023; Clark and Jaini, "Text-to-image diffusion models are zero-shot
classifiers", NeurIPS 2023): the prompt that describes an image z0 is the one under which the model
denoises noisy copies of it best. With noise levels t_j and K seeded draws n_k, the denoising error
of a latent z under prompt c, inside the edit mask M, is

    E_jk(z; c) = sum_M (eps(alpha_j z + sigma_j n_k, t_j, c) - n_k)^2 / (C |M|).

The check reads the image the user gets: z_e is the edited image encoded again (its decoded,
pasted-back pixels), z_s the source image's latent. It asks two things, each draw seen on both
latents and under both prompts so the draw's own noise cancels:

    fit:        f_jk = E_jk(z_s; source) - E_jk(z_e; target)
    direction:  d_jk = E_jk(z_e; source) - E_jk(z_e; target)

    score = mean_jk f_jk,  stderr = std_jk f_jk / sqrt(J K),  direction = mean_jk d_jk.

The edit took when the target prompt explains the edit better than the source prompt does
(direction > 0) and the edited image is explained by its caption about as well as the source by its
own (score > threshold; 0 = as well). A failed edit is either not moved toward the target (direction
<= 0) or a picture the target caption does not describe: an erased object, a wrong colour, a smear
(its error under the target is well above the source's under its caption, score << 0). The model's
output of any family (eps, v, x0, flow velocity) is compared in the eps parametrisation the
Denoiser gives; all 2 prompts x 2 latents x K draws of one level go through the network in one
batched call, unguided (the conditional predictions are the classifier).

Symbols -> names: t_j -> ``levels`` (fractions of the training time labels), K -> ``draws``,
M -> ``mask`` (latent cells, True = the edit may change them; None: every cell). The defaults
(levels, draws, threshold) were chosen on the edit bench: docs/edit_check.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from unsample.core.denoiser import Denoiser
from unsample.editing.masks import repeat_conditioning
from unsample.errors import InputError

CHECK_LEVELS: tuple[float, ...] = (0.2, 0.3, 0.4)
CHECK_DRAWS = 6
CHECK_THRESHOLD = -0.03
"""E(z_s; source) - E(z_e; target) (eps units: the noise's variance is 1) above which an edit fits its caption."""


@dataclass(frozen=True)
class CheckConfig:
    """The check's noise levels (fractions of the training time labels), draws per level, seed and
    the fit score above which the edit took."""

    levels: tuple[float, ...] = CHECK_LEVELS
    draws: int = CHECK_DRAWS
    seed: int = 0
    threshold: float = CHECK_THRESHOLD

    def __post_init__(self) -> None:
        if not self.levels or not all(isinstance(v, float) and 0.0 < v < 1.0 for v in self.levels):
            raise InputError(f"check levels {self.levels} must be fractions in (0, 1)")
        if isinstance(self.draws, bool) or not isinstance(self.draws, int) or self.draws < 1:
            raise InputError(f"check draws={self.draws!r} must be a whole number >= 1")
        if not math.isfinite(self.threshold):
            raise InputError(f"check threshold={self.threshold} must be a finite number")

    @property
    def evaluations(self) -> int:
        """Network evaluations of one check: 2 prompts x 2 latents x K draws at each level."""
        return 4 * self.draws * len(self.levels)


@dataclass(frozen=True)
class CheckResult:
    """The model's judgement of an edit."""

    edit_took: bool
    score: float
    """The fit: how much lower the edit's error under the target is than the source's under its caption."""
    stderr: float
    threshold: float
    direction: float
    """How much better the target prompt explains the edit than the source prompt (> 0: toward the target)."""
    source_score: float
    """The prompts' gap on the source latent (E(z_s; source) - E(z_s; target), < 0 when the source prompt fits)."""
    background_mse: float | None
    """Mean squared difference of the edited and the source latent outside the mask (None without one)."""
    evaluations: int

    def to_json(self) -> dict[str, float | bool | int | None]:
        return {"edit_took": self.edit_took, "score": self.score, "stderr": self.stderr, "threshold": self.threshold,
                "direction": self.direction, "source_score": self.source_score, "background_mse": self.background_mse,
                "evaluations": self.evaluations}


@dataclass(frozen=True)
class DenoisingErrors:
    """E_jk of `check_edit`'s docstring, one per level and draw ([J * K] float64 each)."""

    edit_source: torch.Tensor
    edit_target: torch.Tensor
    source_source: torch.Tensor
    source_target: torch.Tensor


def denoising_errors(denoiser: Denoiser, edited: torch.Tensor, source: torch.Tensor, mask: torch.Tensor | None,
                     config: CheckConfig) -> DenoisingErrors:
    """The errors of both latents under both prompts, at every level and draw.

    ``denoiser``'s conditioning is the batch [source prompt, target prompt], unguided; ``edited``
    and ``source`` are image latents [1, C, h, w]; ``mask`` [h, w] bool or None.
    """
    if denoiser.guided:
        raise InputError("the edit check compares the conditional predictions; give it an unguided denoiser")
    if edited.shape != source.shape or edited.shape[0] != 1:
        raise InputError(f"the check takes two latents [1, C, h, w] of one shape, got {tuple(edited.shape)} "
                         f"and {tuple(source.shape)}")
    k = config.draws
    cells = torch.ones(edited.shape[-2:], dtype=torch.bool, device=edited.device) if mask is None else mask.to(edited.device)
    if not bool(cells.any()):
        raise InputError("the edit check needs a mask with at least one cell that may change")
    weight = cells.to(denoiser.dtype) / (float(cells.sum()) * edited.shape[1])
    batched = denoiser.with_conditioning(repeat_conditioning(denoiser.cond, 2 * k))
    generator = torch.Generator(device="cpu").manual_seed(config.seed)
    labels = float(denoiser.schedule.num_train_timesteps - 1)
    rows: list[torch.Tensor] = []
    for level in config.levels:
        t = torch.tensor(float(round(level * labels)), dtype=torch.float64)
        alpha, sigma = (c.to(edited.device, denoiser.dtype) for c in denoiser.schedule.alpha_sigma_at(t.reshape(1)))
        noise = torch.randn((k, *edited.shape[1:]), generator=generator, dtype=torch.float32).to(edited.device,
                                                                                                 denoiser.dtype)
        # the same K draws noise both latents; each noised copy is seen under both prompts
        latents = torch.cat([edited.expand(k, -1, -1, -1), source.expand(k, -1, -1, -1)]).to(denoiser.dtype)
        noised = alpha * latents + sigma * torch.cat([noise, noise])
        eps = batched(torch.cat([noised, noised]), t)
        rows.append(((eps - noise.repeat(4, 1, 1, 1)) ** 2 * weight).sum(dim=(1, 2, 3)).double().reshape(4, k))
    e = torch.cat(rows, dim=1)  # [under source: edit, source; under target: edit, source] x [J * K]
    return DenoisingErrors(edit_source=e[0], source_source=e[1], edit_target=e[2], source_target=e[3])


def check_edit(denoiser: Denoiser, edited: torch.Tensor, source: torch.Tensor, mask: torch.Tensor | None,
               config: CheckConfig = CheckConfig()) -> CheckResult:
    """Whether the edit from ``source`` to ``edited`` took, by the model's own denoising errors (see
    the module docstring); ``denoiser`` as `denoising_errors` takes it."""
    e = denoising_errors(denoiser, edited, source, mask, config)
    fit = e.source_source - e.edit_target
    score = float(fit.mean())
    stderr = float(fit.std(unbiased=True) / math.sqrt(fit.numel())) if fit.numel() > 1 else float("nan")
    direction = float((e.edit_source - e.edit_target).mean())
    background = None
    if mask is not None and not bool(mask.all()):
        keep = ~mask.to(edited.device)
        background = float(((edited - source) ** 2).mean(dim=1)[0][keep].mean())
    return CheckResult(edit_took=direction > 0 and score > config.threshold, score=score, stderr=stderr,
                       threshold=config.threshold, direction=direction,
                       source_score=float((e.source_source - e.source_target).mean()), background_mse=background,
                       evaluations=config.evaluations)
