"""The edit check: the model judges its own edit, with no extra weights, on every family.

A diffusion model is a classifier of its own prompts (Li et al., "Your diffusion model is secretly
a zero-shot classifier", ICCV 2023; Clark and Jaini, "Text-to-image diffusion models are zero-shot
classifiers", NeurIPS 2023): the prompt that describes an image z0 is the one under which the model
denoises noisy copies of it best. With noise levels t_j and K seeded draws n_k, the denoising error
of a latent z under prompt c, inside the edit mask M, is

    E_jk(z; c) = sum_M (eps(alpha_j z + sigma_j n_k, t_j, c) - n_k)^2 / (C |M|),

and the check compares the two prompts on the edited latent z_e (each draw seen under both prompts,
so the draw's own noise cancels in the difference):

    d_jk(z) = E_jk(z; source) - E_jk(z; target)
    score   = mean_jk d_jk(z_e),    stderr = std_jk d_jk(z_e) / sqrt(J K).

A positive score says the target prompt explains the edit better than the source prompt does: the
edit took when the score is above the threshold. The same differences on the source latent z_s
(``source_score``, negative when the source prompt describes the source) are reported beside it as
the scale of the prompts' difference on this image. The model's output of any family (eps, v, x0, flow velocity) is compared in the eps
parametrisation the Denoiser gives. All 2 prompts x 2 latents x K draws of one level go through
the network in one batched call (unguided: the conditional predictions are the classifier).

Symbols -> names: t_j -> ``levels`` (fractions of the training time labels), K -> ``draws``,
M -> ``mask`` (latent cells, True = the edit may change them; None: every cell).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from unsample.core.denoiser import Denoiser
from unsample.editing.masks import repeat_conditioning
from unsample.errors import InputError


@dataclass(frozen=True)
class CheckConfig:
    """The check's noise levels (fractions of the training time labels), draws per level, seed and
    the score above which the edit took."""

    levels: tuple[float, ...] = (0.3, 0.5, 0.7)
    draws: int = 4
    seed: int = 0
    threshold: float = 0.0

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
    stderr: float
    threshold: float
    source_score: float
    """The same differences on the source latent: the prompts' gap where the edit has not happened."""
    background_mse: float | None
    """Mean squared difference of the edited and the source latent outside the mask (None without one)."""
    evaluations: int

    def to_json(self) -> dict[str, float | bool | int | None]:
        return {"edit_took": self.edit_took, "score": self.score, "stderr": self.stderr, "threshold": self.threshold,
                "source_score": self.source_score, "background_mse": self.background_mse, "evaluations": self.evaluations}


def denoising_gaps(denoiser: Denoiser, edited: torch.Tensor, source: torch.Tensor, mask: torch.Tensor | None,
                   config: CheckConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The differences d_jk(z_e) and d_jk(z_s), one per level and draw (two [J * K], float64).

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
    on_edit, on_source = [], []
    for level in config.levels:
        t = torch.tensor(float(round(level * labels)), dtype=torch.float64)
        alpha, sigma = (c.to(edited.device, denoiser.dtype) for c in denoiser.schedule.alpha_sigma_at(t.reshape(1)))
        noise = torch.randn((k, *edited.shape[1:]), generator=generator, dtype=torch.float32).to(edited.device,
                                                                                                 denoiser.dtype)
        # the same K draws noise both latents; each noised copy is seen under both prompts
        latents = torch.cat([edited.expand(k, -1, -1, -1), source.expand(k, -1, -1, -1)]).to(denoiser.dtype)
        noised = alpha * latents + sigma * torch.cat([noise, noise])
        eps = batched(torch.cat([noised, noised]), t)
        errors = ((eps - torch.cat([noise, noise, noise, noise])) ** 2 * weight).sum(dim=(1, 2, 3))
        under_source, under_target = errors[: 2 * k], errors[2 * k:]
        d = (under_source - under_target).double()  # [edited K, source K]
        on_edit.append(d[:k])
        on_source.append(d[k:])
    return torch.cat(on_edit), torch.cat(on_source)


def check_edit(denoiser: Denoiser, edited: torch.Tensor, source: torch.Tensor, mask: torch.Tensor | None,
               config: CheckConfig = CheckConfig()) -> CheckResult:
    """Whether the edit from ``source`` to ``edited`` took, by the model's own denoising errors (see
    the module docstring); ``denoiser`` as `denoising_gaps` takes it."""
    gaps, on_source = denoising_gaps(denoiser, edited, source, mask, config)
    score = float(gaps.mean())
    stderr = float(gaps.std(unbiased=True) / math.sqrt(gaps.numel())) if gaps.numel() > 1 else float("nan")
    background = None
    if mask is not None and not bool(mask.all()):
        keep = ~mask.to(edited.device)
        background = float(((edited - source) ** 2).mean(dim=1)[0][keep].mean())
    return CheckResult(edit_took=score > config.threshold, score=score, stderr=stderr, threshold=config.threshold,
                       source_score=float(on_source.mean()), background_mse=background, evaluations=config.evaluations)
