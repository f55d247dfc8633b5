"""Write a diffusers SDXL pipeline folder as one original-layout (Stability's SGM) ``.safetensors`` file.

The file is what ``StableDiffusionXLPipeline.from_single_file`` reads; the keys invert diffusers'
own renaming in ``diffusers.loaders.single_file_utils``:

* UNet, under ``model.diffusion_model.``: `unsample_lab.testing.ldm_checkpoint.unet_to_ldm`, the
  inverse of ``convert_ldm_unet_checkpoint`` (the ``text_time`` ``add_embedding`` becomes
  ``label_emb.0.{0,2}``).
* VAE, under ``first_stage_model.``: `unsample_lab.testing.ldm_checkpoint.vae_to_ldm`, the inverse of
  ``convert_ldm_vae_checkpoint``.
* ``text_encoder`` (CLIP-L), under ``conditioner.embedders.0.transformer.text_model.``:
  ``convert_ldm_clip_checkpoint`` only strips that prefix.
* ``text_encoder_2`` (OpenCLIP-bigG), under ``conditioner.embedders.1.model.``: the inverse of
  ``convert_open_clip_checkpoint``: ``resblocks.i`` with ``ln_1``/``ln_2``, ``mlp.c_fc``/
  ``mlp.c_proj``, the q/k/v projections fused into ``attn.in_proj_{weight,bias}``,
  ``positional_embedding`` and ``token_embedding``, ``ln_final``, and ``text_projection`` as
  the matrix OpenCLIP multiplies by (the transpose of the Linear's weight).

diffusers tells the two encoders apart by width (``create_diffusers_clip_model_from_ldm``
compares each key's position-embedding width with the encoder it builds), so the two widths
must differ, as in SDXL (768 and 1280) and in the tiny test pipeline (16 and 32).
`tests/test_single_file_families.py` checks the round trip tensor for tensor.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from unsample.errors import InputError
from unsample_lab.testing.ldm_checkpoint import unet_to_ldm, vae_to_ldm

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_L_PREFIX = "conditioner.embedders.0.transformer."
OPEN_CLIP_PREFIX = "conditioner.embedders.1.model."

_OPEN_CLIP_FIXED = {
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
}
_OPEN_CLIP_LAYER = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}


def clip_to_ldm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers CLIP text model's state dict with every key under ``text_model.`` (the
    layout ``convert_ldm_clip_checkpoint`` yields; ``CLIPTextModel`` saves its keys without it)."""
    return {(key if key.startswith(("text_model.", "text_projection.")) else "text_model." + key): value
            for key, value in state.items()}


def open_clip_to_ldm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ``CLIPTextModelWithProjection`` state dict in OpenCLIP's key layout (without the prefix)."""
    state = clip_to_ldm(state)
    out: dict[str, torch.Tensor] = {}
    fused: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key in _OPEN_CLIP_FIXED:
            out[_OPEN_CLIP_FIXED[key]] = value
        elif key == "text_projection.weight":
            out["text_projection"] = value.T.contiguous()  # OpenCLIP computes x @ text_projection
        elif m := re.match(r"text_model\.encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)$", key):
            fused.setdefault((int(m[1]), m[3]), {})[m[2]] = value
        elif m := re.match(r"text_model\.encoder\.layers\.(\d+)\.(.*)$", key):
            rest = m[2]
            for diffusers_name, open_clip_name in _OPEN_CLIP_LAYER.items():
                if rest.startswith(diffusers_name + "."):
                    rest = open_clip_name + rest[len(diffusers_name):]
                    break
            else:
                raise InputError(f"CLIP key {key!r} has no OpenCLIP name here")
            out[f"transformer.resblocks.{m[1]}.{rest}"] = value
        else:
            raise InputError(f"CLIP key {key!r} has no OpenCLIP name here")
    for (layer, kind), parts in fused.items():
        out[f"transformer.resblocks.{layer}.attn.in_proj_{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out


def save_sdxl_checkpoint(pipeline_folder: str | Path, path: str | Path) -> Path:
    """Write the SDXL pipeline in ``pipeline_folder`` (UNet, VAE, both text encoders) as one
    SGM-layout safetensors file at ``path``; return it."""
    from diffusers import AutoencoderKL, UNet2DConditionModel  # heavy (diffusers' models): loaded on use
    from transformers import CLIPTextModel, CLIPTextModelWithProjection  # heavy (transformers' models): loaded on use

    folder = Path(pipeline_folder)
    unet = UNet2DConditionModel.from_pretrained(folder / "unet")
    vae = AutoencoderKL.from_pretrained(folder / "vae")
    clip_l = CLIPTextModel.from_pretrained(folder / "text_encoder")
    open_clip = CLIPTextModelWithProjection.from_pretrained(folder / "text_encoder_2")
    if clip_l.config.hidden_size == open_clip.config.hidden_size:
        raise InputError("diffusers tells SDXL's two text encoders apart by width; these are both "
                         f"{clip_l.config.hidden_size} wide, so the file would not load back")
    with_attention = {i for i, kind in enumerate(unet.config.up_block_types) if "CrossAttn" in kind}
    checkpoint: dict[str, torch.Tensor] = {}
    for key, value in unet_to_ldm(unet.state_dict(), unet.config.layers_per_block, with_attention).items():
        checkpoint[UNET_PREFIX + key] = value
    for key, value in vae_to_ldm(vae.state_dict(), len(vae.config.down_block_types)).items():
        checkpoint[VAE_PREFIX + key] = value
    for key, value in clip_to_ldm(clip_l.state_dict()).items():
        checkpoint[CLIP_L_PREFIX + key] = value
    for key, value in open_clip_to_ldm(open_clip.state_dict()).items():
        checkpoint[OPEN_CLIP_PREFIX + key] = value
    path = Path(path)
    save_file({k: v.contiguous() for k, v in checkpoint.items()}, str(path))
    return path
