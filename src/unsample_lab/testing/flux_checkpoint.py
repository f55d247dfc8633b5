"""Write a diffusers Flux pipeline's transformer as one ``.safetensors`` file, in the original
Black Forest Labs layout (as ``flux1-dev.safetensors`` ships) or in diffusers' own.

The BFL keys invert diffusers' renaming in
``diffusers.loaders.single_file_utils.convert_flux_transformer_checkpoint_to_diffusers``:
``time_text_embed.{timestep,text,guidance}_embedder.linear_{1,2}`` -> ``{time,vector,guidance}_in.{in,out}_layer``,
``context_embedder`` -> ``txt_in``, ``x_embedder`` -> ``img_in``; ``transformer_blocks.i`` ->
``double_blocks.i`` (``norm1``/``norm1_context`` -> ``img_mod``/``txt_mod.lin``, q/k/v and the
``add_*`` projections fused into ``img_attn.qkv``/``txt_attn.qkv``, q/k norms ->
``*_attn.norm.{query,key}_norm.scale``, ``ff``/``ff_context`` -> ``img_mlp``/``txt_mlp.{0,2}``,
``to_out.0``/``to_add_out`` -> ``img_attn``/``txt_attn.proj``); ``single_transformer_blocks.i``
-> ``single_blocks.i`` (``norm.linear`` -> ``modulation.lin``, q, k, v and ``proj_mlp`` fused
into ``linear1``, ``proj_out`` -> ``linear2``, q/k norms -> ``norm.{query,key}_norm.scale``);
``proj_out`` -> ``final_layer.linear`` and ``norm_out.linear`` -> ``final_layer.adaLN_modulation.1``
stored as (shift, scale) where diffusers keeps (scale, shift).

diffusers 0.42 splits ``linear1`` with Flux.1's widths written into the converter (3072 and
4 x 3072), so it reads a BFL-layout file back only for a 3072-wide transformer; the tiny test
transformer round-trips through the converter at the tensor level
(`tests/test_single_file_families.py`), and loads as a pipeline from the diffusers layout.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import save_file

from unsample.errors import InputError
from unsample_lab.testing.sd3_checkpoint import swap_halves

_FIXED = {
    "time_text_embed.timestep_embedder.linear_1": "time_in.in_layer",
    "time_text_embed.timestep_embedder.linear_2": "time_in.out_layer",
    "time_text_embed.text_embedder.linear_1": "vector_in.in_layer",
    "time_text_embed.text_embedder.linear_2": "vector_in.out_layer",
    "time_text_embed.guidance_embedder.linear_1": "guidance_in.in_layer",
    "time_text_embed.guidance_embedder.linear_2": "guidance_in.out_layer",
    "context_embedder": "txt_in",
    "x_embedder": "img_in",
    "proj_out": "final_layer.linear",
}
_DOUBLE = {
    "norm1.linear": "img_mod.lin",
    "norm1_context.linear": "txt_mod.lin",
    "attn.norm_q": "img_attn.norm.query_norm",
    "attn.norm_k": "img_attn.norm.key_norm",
    "attn.norm_added_q": "txt_attn.norm.query_norm",
    "attn.norm_added_k": "txt_attn.norm.key_norm",
    "ff.net.0.proj": "img_mlp.0",
    "ff.net.2": "img_mlp.2",
    "ff_context.net.0.proj": "txt_mlp.0",
    "ff_context.net.2": "txt_mlp.2",
    "attn.to_out.0": "img_attn.proj",
    "attn.to_add_out": "txt_attn.proj",
}
_SINGLE = {
    "norm.linear": "modulation.lin",
    "attn.norm_q": "norm.query_norm",
    "attn.norm_k": "norm.key_norm",
    "proj_out": "linear2",
}
_FUSED = {  # diffusers module -> (original module, its place in the fused weight)
    "attn.to_q": ("img_attn.qkv", 0), "attn.to_k": ("img_attn.qkv", 1), "attn.to_v": ("img_attn.qkv", 2),
    "attn.add_q_proj": ("txt_attn.qkv", 0), "attn.add_k_proj": ("txt_attn.qkv", 1),
    "attn.add_v_proj": ("txt_attn.qkv", 2),
}
_SINGLE_FUSED = {"attn.to_q": 0, "attn.to_k": 1, "attn.to_v": 2, "proj_mlp": 3}


def _norm_kind(original: str, kind: str) -> str:
    """The original parameter name: RMSNorm weights are ``scale`` in BFL's code."""
    return "scale" if original.endswith(("query_norm", "key_norm")) and kind == "weight" else kind


def flux_transformer_to_bfl(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ``FluxTransformer2DModel`` state dict in BFL's key layout (without a prefix)."""
    out: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[int, torch.Tensor]] = {}
    for key, value in state.items():
        module, _, kind = key.rpartition(".")
        if module in _FIXED:
            out[f"{_FIXED[module]}.{kind}"] = value
        elif module == "norm_out.linear":
            out[f"final_layer.adaLN_modulation.1.{kind}"] = swap_halves(value)
        elif m := re.match(r"transformer_blocks\.(\d+)\.(.*)$", module):
            i, rest = m[1], m[2]
            if rest in _FUSED:
                name, place = _FUSED[rest]
                fused.setdefault(f"double_blocks.{i}.{name}.{kind}", {})[place] = value
            elif rest in _DOUBLE:
                out[f"double_blocks.{i}.{_DOUBLE[rest]}.{_norm_kind(_DOUBLE[rest], kind)}"] = value
            else:
                raise InputError(f"Flux transformer key {key!r} has no BFL name here")
        elif m := re.match(r"single_transformer_blocks\.(\d+)\.(.*)$", module):
            i, rest = m[1], m[2]
            if rest in _SINGLE_FUSED:
                fused.setdefault(f"single_blocks.{i}.linear1.{kind}", {})[_SINGLE_FUSED[rest]] = value
            elif rest in _SINGLE:
                out[f"single_blocks.{i}.{_SINGLE[rest]}.{_norm_kind(_SINGLE[rest], kind)}"] = value
            else:
                raise InputError(f"Flux transformer key {key!r} has no BFL name here")
        else:
            raise InputError(f"Flux transformer key {key!r} has no BFL name here")
    for name, parts in fused.items():
        out[name] = torch.cat([parts[place] for place in sorted(parts)])
    return out


def save_flux_checkpoint(pipeline_folder: str | Path, path: str | Path, *,
                         layout: Literal["bfl", "diffusers"] = "bfl", prefix: str = "") -> Path:
    """Write the transformer of the Flux pipeline in ``pipeline_folder`` alone (as Flux files come:
    the VAE and text encoders are the config folder's) as one safetensors file at ``path``, in
    BFL's layout or diffusers' own, each key under ``prefix`` (BFL's files have none, some
    re-saves use ``model.diffusion_model.``); return it."""
    from diffusers import FluxTransformer2DModel  # heavy (diffusers' models): loaded on use

    transformer = FluxTransformer2DModel.from_pretrained(Path(pipeline_folder) / "transformer")
    state = transformer.state_dict()
    if layout == "bfl":
        state = flux_transformer_to_bfl(state)
    elif layout != "diffusers":
        raise InputError(f"layout must be 'bfl' or 'diffusers', not {layout!r}")
    elif prefix:
        raise InputError("diffusers reads a diffusers-layout transformer file as is: it takes no prefix")
    path = Path(path)
    save_file({prefix + k: v.contiguous() for k, v in state.items()}, str(path))
    return path
