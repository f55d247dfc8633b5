"""A noise-aware classifier p_phi(y | x_t) for classifier guidance, stored as safetensors.

The architecture follows guided-diffusion's classifier in spirit: the encoder half of a UNet. It
is built from diffusers' UNet parts: sinusoidal time features (``Timesteps``) into a
``TimestepEmbedding``, ``DownBlock2D`` stages that take that embedding, then global average
pooling and a linear layer to the class logits. Its input is whatever the diffusion model
denoises: pixels in [-1, 1] for a pixel-space model, latents for a latent one.

A file is one ``.safetensors``: the weights, with the `ClassifierConfig` as JSON in its
metadata. Loading reads only that (safetensors holds no code), so a classifier a user hands in
is never unpickled.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from unsample.core.classifier import ClassifierGuidance
from unsample.errors import InputError

FORMAT = "unsample-noisy-classifier/1"
POOLS = ("mean", "mean+max")


@dataclass(frozen=True)
class ClassifierConfig:
    """Channels in, classes out, the width of each down stage, the time features' size, and
    (optionally) the classes' names, so a class can be given as a word."""

    in_channels: int = 3
    num_classes: int = 2
    block_out_channels: tuple[int, ...] = (32, 64)
    time_channels: int = 32
    norm_num_groups: int = 8
    class_names: tuple[str, ...] = ()
    layers_per_block: int = 1
    # "mean": global average pooling (guided-diffusion's "adaptive" head); "mean+max": the
    # average and the maximum of each channel, which keeps a small object's evidence from being
    # averaged away by the background around it.
    pool: str = "mean"

    def __post_init__(self) -> None:
        if self.in_channels < 1 or self.num_classes < 2 or not self.block_out_channels:
            raise InputError("a classifier needs in_channels >= 1, num_classes >= 2 and at least one down stage")
        if self.pool not in POOLS:
            raise InputError(f"pool={self.pool!r} is not one of {', '.join(POOLS)}")
        if self.class_names and len(self.class_names) != self.num_classes:
            raise InputError(f"{len(self.class_names)} class names for {self.num_classes} classes")
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise InputError(f"every stage width must be a multiple of norm_num_groups={self.norm_num_groups}")


class NoisyClassifier(torch.nn.Module):
    """``classifier(x_t, t) -> logits [B, num_classes]`` with t the model's time label."""

    def __init__(self, config: ClassifierConfig) -> None:
        # diffusers is heavy: loaded when a classifier is built, not by the CLI that may never use one
        from diffusers.models.embeddings import TimestepEmbedding, Timesteps
        from diffusers.models.unets.unet_2d_blocks import DownBlock2D

        super().__init__()
        self.config = config
        widths = config.block_out_channels
        embed = widths[0] * 4
        self.time_proj = Timesteps(config.time_channels, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(config.time_channels, embed)
        self.conv_in = torch.nn.Conv2d(config.in_channels, widths[0], kernel_size=3, padding=1)
        self.down = torch.nn.ModuleList(
            DownBlock2D(in_channels=widths[max(i - 1, 0)], out_channels=w, temb_channels=embed,
                        num_layers=config.layers_per_block,
                        resnet_groups=config.norm_num_groups, add_downsample=i < len(widths) - 1)
            for i, w in enumerate(widths)
        )
        self.norm = torch.nn.GroupNorm(config.norm_num_groups, widths[-1])
        self.head = torch.nn.Linear(widths[-1] * (2 if config.pool == "mean+max" else 1), config.num_classes)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device).reshape(-1).expand(x.shape[0])
        temb = self.time_embedding(self.time_proj(t).to(self.conv_in.weight.dtype))
        h = self.conv_in(x.to(self.conv_in.weight.dtype))
        for block in self.down:
            h, _ = block(h, temb)
        h = torch.nn.functional.silu(self.norm(h))
        pooled = h.mean(dim=(2, 3))
        if self.config.pool == "mean+max":
            pooled = torch.cat([pooled, h.amax(dim=(2, 3))], dim=1)
        return self.head(pooled)

    def class_index(self, label: str | int) -> int:
        """A class given by index or (when the config names them) by name; one-line error otherwise."""
        names = self.config.class_names
        text = str(label).strip()
        if text.lstrip("-").isdigit() and 0 <= int(text) < self.config.num_classes:
            return int(text)
        if text in names:
            return names.index(text)
        named = f" or one of {', '.join(names)}" if names else ""
        raise InputError(f"class label {label!r} is not a class of this classifier; give 0..{self.config.num_classes - 1}{named}")

    def guidance(self, labels: torch.Tensor | int | str, scale: float = 1.0) -> ClassifierGuidance:
        """Classifier guidance toward ``labels`` (indices, or one class name) at ``scale``
        (for `unsample.invert` / `edit`)."""
        if isinstance(labels, str):
            labels = self.class_index(labels)
        labels = torch.as_tensor(labels).reshape(-1).long()
        if bool((labels < 0).any() or (labels >= self.config.num_classes).any()):
            raise InputError(f"class labels {labels.tolist()} must be in 0..{self.config.num_classes - 1}")
        return ClassifierGuidance(self, labels, scale)

    def save(self, path: str | Path) -> Path:
        """Weights and config into one .safetensors file."""
        path = Path(path)
        if path.suffix != ".safetensors":
            raise InputError(f"classifier file {str(path)!r} must end in .safetensors")
        meta = {"format": FORMAT, "config": json.dumps(asdict(self.config))}
        save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}, str(path), metadata=meta)
        return path

    @classmethod
    def load(cls, path: str | Path, *, device: str | torch.device = "cpu") -> NoisyClassifier:
        """A classifier saved by `save`; anything else is refused in one line."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"classifier file {str(path)!r} does not exist")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception:  # noqa: BLE001 - safetensors raises several kinds for a foreign file
            raise InputError(f"{str(path)!r} is not a readable safetensors file; give a classifier saved by unsample") from None
        if meta.get("format") != FORMAT:
            raise InputError(f"{str(path)!r} is not an unsample noisy classifier (format {meta.get('format')!r})")
        raw = json.loads(meta["config"])
        model = cls(ClassifierConfig(**{**raw, "block_out_channels": tuple(raw["block_out_channels"]),
                                         "class_names": tuple(raw.get("class_names", ()))}))
        missing, unexpected = model.load_state_dict(tensors, strict=False)
        if missing or unexpected:
            raise InputError(f"{str(path)!r} does not match its config (missing {missing[:3]}, unexpected {unexpected[:3]})")
        return model.to(device).eval().requires_grad_(False)
