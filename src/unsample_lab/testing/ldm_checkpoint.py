"""Write a diffusers SD 1.x pipeline folder as one original-layout (LDM / A1111) ``.safetensors`` file.

diffusers converts such files to its own layout (``from_single_file``) but ships no function for
the way back, so the tests build the single file here, by inverting diffusers' own renaming
(``diffusers.loaders.single_file_utils.convert_ldm_{unet,vae,clip}_checkpoint``):

* UNet, under ``model.diffusion_model.``: ``down_blocks.b.resnets.l`` -> ``input_blocks.{b(L+1)+l+1}.0``,
  ``down_blocks.b.attentions.l`` -> ``input_blocks.{b(L+1)+l+1}.1``, a downsampler ->
  ``input_blocks.{(b+1)(L+1)}.0.op``, the mid block -> ``middle_block.{0,1,2}``, ``up_blocks.b``
  -> ``output_blocks.{b(L+1)+l}`` with the upsampler after the last layer (``.1.conv``, or
  ``.2.conv`` after an attention); L is ``layers_per_block``; the ResNet parts get LDM's names
  (``norm1`` -> ``in_layers.0``, ...); SDXL's ``add_embedding`` (or a class embedding) ->
  ``label_emb.0.{0,2}``.
* VAE, under ``first_stage_model.``: ``down_blocks.i.resnets.j`` -> ``down.i.block.j``,
  ``up_blocks.i`` -> ``up.{n-1-i}``, mid ResNets -> ``mid.block_{j+1}``, the mid attention ->
  ``mid.attn_1`` with 1x1-conv q/k/v/proj_out weights.
* CLIP text encoder, under ``cond_stage_model.transformer.text_model.``.

`tests/test_checkpoint_layouts.py` checks the round trip: diffusers reads the file back into
weights equal to the folder's, tensor for tensor.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from unsample.errors import InputError

_UNET_RESNET = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
                ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection"))
_VAE_ATTENTION = (("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."), ("to_out.0.", "proj_out."))


def _resnet(rest: str) -> str:
    for new, old in _UNET_RESNET:
        if rest.startswith(new + "."):
            return old + rest[len(new):]
    return rest


def unet_to_ldm(state: dict[str, torch.Tensor], layers_per_block: int,
                up_blocks_with_attention: set[int]) -> dict[str, torch.Tensor]:
    """A diffusers UNet2DConditionModel state dict in LDM's key layout (without the prefix)."""
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING  # heavy (diffusers' models): loaded on use

    unet_names = DIFFUSERS_TO_LDM_MAPPING["unet"]
    # SDXL's "text_time" add_embedding (and a class embedding) both live under LDM's label_emb
    fixed = {**unet_names["layers"], **unet_names["class_embed_type"], **unet_names["addition_embed_type"]}
    per = layers_per_block + 1
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in fixed:
            out[fixed[key]] = value
            continue
        if m := re.match(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
            b, l, rest = int(m[1]), int(m[2]), m[3]
            new = f"input_blocks.{b * per + l + 1}.0.{_resnet(rest)}"
        elif m := re.match(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", key):
            b, l, rest = int(m[1]), int(m[2]), m[3]
            new = f"input_blocks.{b * per + l + 1}.1.{rest}"
        elif m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
            new = f"input_blocks.{(int(m[1]) + 1) * per}.0.op.{m[2]}"
        elif m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", key):
            new = f"middle_block.{2 * int(m[1])}.{_resnet(m[2])}"
        elif m := re.match(r"mid_block\.attentions\.0\.(.*)", key):
            new = f"middle_block.1.{m[1]}"
        elif m := re.match(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
            b, l, rest = int(m[1]), int(m[2]), m[3]
            new = f"output_blocks.{b * per + l}.0.{_resnet(rest)}"
        elif m := re.match(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", key):
            b, l, rest = int(m[1]), int(m[2]), m[3]
            new = f"output_blocks.{b * per + l}.1.{rest}"
        elif m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
            b = int(m[1])
            new = f"output_blocks.{b * per + layers_per_block}.{2 if b in up_blocks_with_attention else 1}.conv.{m[2]}"
        else:
            raise InputError(f"UNet key {key!r} has no LDM name here (only SD 1.x / SDXL-style UNets are written)")
        out[new] = value
    return out


def vae_to_ldm(state: dict[str, torch.Tensor], num_blocks: int) -> dict[str, torch.Tensor]:
    """A diffusers AutoencoderKL state dict in LDM's key layout (without the prefix)."""
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING  # heavy (diffusers' models): loaded on use

    fixed = DIFFUSERS_TO_LDM_MAPPING["vae"]
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in fixed:
            out[fixed[key]] = value
            continue
        if m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
            new = f"encoder.down.{m[1]}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
            new = f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
            new = f"decoder.up.{num_blocks - 1 - int(m[1])}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
            new = f"decoder.up.{num_blocks - 1 - int(m[1])}.upsample.conv.{m[2]}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", key):
            new = f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)", key):
            rest = m[2]
            for diffusers_name, ldm_name in _VAE_ATTENTION:
                if rest.startswith(diffusers_name):
                    rest = ldm_name + rest[len(diffusers_name):]
                    break
            new = f"{m[1]}.mid.attn_1.{rest}"
            if value.ndim == 2:  # LDM's attention projections are 1x1 convolutions
                value = value[:, :, None, None]
        else:
            raise InputError(f"VAE key {key!r} has no LDM name here")
        out[new] = value
    return out


def save_ldm_checkpoint(pipeline_folder: str | Path, path: str | Path) -> Path:
    """Write the SD 1.x pipeline in ``pipeline_folder`` (UNet, VAE, CLIP text encoder) as one
    LDM-layout safetensors file at ``path``; return it."""
    from diffusers import AutoencoderKL, UNet2DConditionModel  # heavy (diffusers' models): loaded on use
    from transformers import CLIPTextModel  # heavy (transformers' models): loaded on use

    folder = Path(pipeline_folder)
    unet = UNet2DConditionModel.from_pretrained(folder / "unet")
    vae = AutoencoderKL.from_pretrained(folder / "vae")
    text = CLIPTextModel.from_pretrained(folder / "text_encoder")
    with_attention = {i for i, kind in enumerate(unet.config.up_block_types) if "CrossAttn" in kind}
    checkpoint: dict[str, torch.Tensor] = {}
    for key, value in unet_to_ldm(unet.state_dict(), unet.config.layers_per_block, with_attention).items():
        checkpoint["model.diffusion_model." + key] = value
    for key, value in vae_to_ldm(vae.state_dict(), len(vae.config.down_block_types)).items():
        checkpoint["first_stage_model." + key] = value
    for key, value in text.state_dict().items():
        name = key if key.startswith("text_model.") else "text_model." + key
        checkpoint["cond_stage_model.transformer." + name] = value
    path = Path(path)
    save_file({k: v.contiguous() for k, v in checkpoint.items()}, str(path))
    return path
