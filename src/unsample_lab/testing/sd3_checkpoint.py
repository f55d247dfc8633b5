"""Write a diffusers SD3 pipeline folder as one original-layout (Stability's MMDiT) ``.safetensors`` file.

The file is what ``StableDiffusion3Pipeline.from_single_file`` reads; the keys invert diffusers'
own renaming in ``diffusers.loaders.single_file_utils``:

* transformer, under ``model.diffusion_model.``: the inverse of
  ``convert_sd3_transformer_checkpoint_to_diffusers``: ``transformer_blocks.i`` ->
  ``joint_blocks.i`` with an ``x_block`` (the image stream: ``to_q/to_k/to_v`` fused into
  ``attn.qkv``, ``to_out.0`` -> ``attn.proj``, ``norm1.linear`` -> ``adaLN_modulation.1``,
  ``ff.net.{0.proj,2}`` -> ``mlp.fc{1,2}``, the optional ``attn2`` and q/k norms ``ln_q/ln_k``)
  and a ``context_block`` (the ``add_*`` projections, ``norm1_context``, ``ff_context``); the
  last block's context stream is "pre-only" and its modulation, like ``norm_out``'s
  (``final_layer.adaLN_modulation.1``), is stored as (shift, scale) where diffusers keeps
  (scale, shift) (``swap_scale_shift``, its own inverse); ``pos_embed``, ``x_embedder.proj``,
  ``t_embedder.mlp``, ``y_embedder.mlp``, ``context_embedder``, ``final_layer.linear``.
* VAE, under ``first_stage_model.``: `unsample_lab.testing.ldm_checkpoint.vae_to_ldm`, the inverse of
  ``convert_ldm_vae_checkpoint``.
* optionally the text encoders as SD3's ``*_incl_clips*`` files carry them:
  ``text_encoders.clip_l.transformer.text_model.*``, ``text_encoders.clip_g.transformer.*``
  (``convert_ldm_clip_checkpoint`` strips the prefixes) and ``text_encoders.t5xxl.transformer.*``
  (``convert_sd3_t5_checkpoint_to_diffusers`` strips it).

diffusers loads an SD3 file's CLIP-L with an identity ``text_projection`` (SD3 pools CLIP-L
unprojected; ``create_diffusers_clip_model_from_ldm`` sets ``torch.eye``), so a folder whose
CLIP-L projection is anything else cannot round-trip: `save_sd3_checkpoint` refuses it.
`tests/test_single_file_families.py` checks the round trip tensor for tensor.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from unsample.errors import InputError
from unsample_lab.testing.ldm_checkpoint import vae_to_ldm
from unsample_lab.testing.sdxl_checkpoint import clip_to_ldm

TRANSFORMER_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_L_PREFIX = "text_encoders.clip_l.transformer."
CLIP_G_PREFIX = "text_encoders.clip_g.transformer."
T5_PREFIX = "text_encoders.t5xxl.transformer."

_FIXED = {
    "pos_embed.pos_embed": "pos_embed",
    "pos_embed.proj.weight": "x_embedder.proj.weight",
    "pos_embed.proj.bias": "x_embedder.proj.bias",
    "time_text_embed.timestep_embedder.linear_1": "t_embedder.mlp.0",
    "time_text_embed.timestep_embedder.linear_2": "t_embedder.mlp.2",
    "time_text_embed.text_embedder.linear_1": "y_embedder.mlp.0",
    "time_text_embed.text_embedder.linear_2": "y_embedder.mlp.2",
    "context_embedder": "context_embedder",
    "proj_out": "final_layer.linear",
}
# per block: diffusers name -> original name (the fused q/k/v projections are handled apart)
_BLOCK = {
    "attn.norm_q": "x_block.attn.ln_q",
    "attn.norm_k": "x_block.attn.ln_k",
    "attn.norm_added_q": "context_block.attn.ln_q",
    "attn.norm_added_k": "context_block.attn.ln_k",
    "attn.to_out.0": "x_block.attn.proj",
    "attn.to_add_out": "context_block.attn.proj",
    "attn2.norm_q": "x_block.attn2.ln_q",
    "attn2.norm_k": "x_block.attn2.ln_k",
    "attn2.to_out.0": "x_block.attn2.proj",
    "norm1.linear": "x_block.adaLN_modulation.1",
    "norm1_context.linear": "context_block.adaLN_modulation.1",
    "ff.net.0.proj": "x_block.mlp.fc1",
    "ff.net.2": "x_block.mlp.fc2",
    "ff_context.net.0.proj": "context_block.mlp.fc1",
    "ff_context.net.2": "context_block.mlp.fc2",
}


def swap_halves(weight: torch.Tensor) -> torch.Tensor:
    """(a, b) -> (b, a) along dim 0: diffusers' ``swap_scale_shift``, which is its own inverse."""
    first, second = weight.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def _split_name(name: str) -> tuple[str, str]:
    """``"a.b.weight"`` -> ``("a.b", "weight")``."""
    head, _, tail = name.rpartition(".")
    return head, tail


def sd3_transformer_to_original(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An ``SD3Transformer2DModel`` state dict in the original MMDiT key layout (without the prefix)."""
    layers = {int(m[1]) for key in state if (m := re.match(r"transformer_blocks\.(\d+)\.", key))}
    last = max(layers)
    out: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key in _FIXED:
            out[_FIXED[key]] = value
            continue
        module, kind = _split_name(key)
        if module in _FIXED:
            out[f"{_FIXED[module]}.{kind}"] = value
        elif module == "norm_out.linear":
            out[f"final_layer.adaLN_modulation.1.{kind}"] = swap_halves(value)
        elif m := re.match(r"transformer_blocks\.(\d+)\.(attn2?)\.(?:to_|add_)?([qkv])(?:_proj)?$", module):
            i, attn, which = int(m[1]), m[2], m[3]
            stream = "context_block" if f".{attn}.add_" in key else "x_block"
            fused.setdefault(f"joint_blocks.{i}.{stream}.{attn}.qkv.{kind}", {})[which] = value
        elif (m := re.match(r"transformer_blocks\.(\d+)\.(.*)$", module)) and m[2] in _BLOCK:
            i, rest = int(m[1]), m[2]
            if rest == "norm1_context.linear" and i == last:  # the pre-only context stream of the last block
                value = swap_halves(value)
            out[f"joint_blocks.{i}.{_BLOCK[rest]}.{kind}"] = value
        else:
            raise InputError(f"SD3 transformer key {key!r} has no original name here")
    for name, parts in fused.items():
        out[name] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out


def save_sd3_checkpoint(pipeline_folder: str | Path, path: str | Path, *, with_vae: bool = True,
                        with_clips: bool = False, with_t5: bool = False) -> Path:
    """Write the SD3 pipeline in ``pipeline_folder`` as one original-layout safetensors file at
    ``path``: the transformer, the VAE (unless ``with_vae=False``), the two CLIP encoders with
    ``with_clips`` and T5 with ``with_t5`` (the folder must have it); return it."""
    from diffusers import AutoencoderKL, SD3Transformer2DModel  # heavy (diffusers' models): loaded on use
    from transformers import CLIPTextModelWithProjection, T5EncoderModel  # heavy (transformers' models): loaded on use

    folder = Path(pipeline_folder)
    transformer = SD3Transformer2DModel.from_pretrained(folder / "transformer")
    checkpoint: dict[str, torch.Tensor] = {}
    for key, value in sd3_transformer_to_original(transformer.state_dict()).items():
        checkpoint[TRANSFORMER_PREFIX + key] = value
    if with_vae:
        vae = AutoencoderKL.from_pretrained(folder / "vae")
        for key, value in vae_to_ldm(vae.state_dict(), len(vae.config.down_block_types)).items():
            checkpoint[VAE_PREFIX + key] = value
    if with_clips:
        clip_l = CLIPTextModelWithProjection.from_pretrained(folder / "text_encoder")
        projection = clip_l.text_projection.weight
        if projection.shape[0] != projection.shape[1] or not torch.equal(projection, torch.eye(projection.shape[0])):
            raise InputError("diffusers loads an SD3 file's CLIP-L with an identity text_projection; this folder's "
                             "text_encoder has another one, so the file would not load back to the same weights")
        clip_g = CLIPTextModelWithProjection.from_pretrained(folder / "text_encoder_2")
        for prefix, encoder in ((CLIP_L_PREFIX, clip_l), (CLIP_G_PREFIX, clip_g)):
            for key, value in clip_to_ldm(encoder.state_dict()).items():
                checkpoint[prefix + key] = value
    if with_t5:
        if not (folder / "text_encoder_3").is_dir():
            raise InputError(f"{folder} has no text_encoder_3 (T5) to write")
        t5 = T5EncoderModel.from_pretrained(folder / "text_encoder_3")
        for key, value in t5.state_dict().items():
            # encoder.embed_tokens is tied to shared; both names are written (safetensors wants two tensors),
            # since diffusers' T5 loader fills each by name and leaves a missing one on the meta device
            checkpoint[T5_PREFIX + key] = value.clone()
    path = Path(path)
    save_file({k: v.contiguous() for k, v in checkpoint.items()}, str(path))
    return path
