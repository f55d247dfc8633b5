"""Single-file checkpoints of SDXL, SD3 and Flux, loaded offline with ``config=FOLDER``.

Each file is written from a tiny diffusers folder by inverting diffusers' own renaming
(`unsample_lab.testing.sdxl_checkpoint`, `.sd3_checkpoint`, `.flux_checkpoint`) and read back by
``from_single_file`` through `unsample.load`: every weight equal to the source folder's, tensor
for tensor, the parts the file lacks taken from the config folder, and inversion and
reconstruction giving the same latents as the folder.

The config folders are of the same architecture but another random seed (or a copy without any
weight files, as diffusers fetches configs from the hub), so a weight equal to the source's can
only have come from the file.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import unsample

T5_TOKENS = 16  # the tiny T5's window


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """HF_HUB_OFFLINE=1, and any attempt to reach the hub fails the test."""
    import diffusers.loaders.single_file as single_file
    import diffusers.pipelines.pipeline_utils as pipeline_utils
    import diffusers.utils.hub_utils as hub_utils
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"tried to reach the hub: {args} {kwargs}")

    for module in (pipeline_utils, hub_utils, huggingface_hub, single_file):
        for name in ("snapshot_download", "hf_hub_download", "model_info"):
            monkeypatch.setattr(module, name, refuse, raising=False)


def _config_only(folder: Path, out: Path) -> Path:
    """A copy of a pipeline folder without its weight files (configs and tokenizers only)."""
    if not out.exists():
        shutil.copytree(folder, out, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    return out


def _load(name: Path, config: Path | None = None) -> Any:
    model = unsample.load(str(name), config=None if config is None else str(config), device="cpu")
    model.max_sequence_length = T5_TOKENS
    return model


def _assert_same_weights(got: Any, want: Any, part: str) -> None:
    got_state, want_state = getattr(got.pipe, part).state_dict(), getattr(want.pipe, part).state_dict()
    assert got_state.keys() == want_state.keys(), part
    different = [key for key in want_state if not torch.equal(got_state[key], want_state[key])]
    assert not different, f"{part}: {different[:3]}"


def _image(size: int) -> Image.Image:
    return Image.fromarray((np.random.default_rng(0).random((size, size, 3)) * 255).astype(np.uint8))


def _own_memory(model: Any) -> None:
    """Every weight of the model copied into fresh memory, and its prompt cache emptied.

    ``from_pretrained`` leaves weights in the safetensors file's memory map (8-byte aligned),
    ``from_single_file`` in fresh (64-byte aligned) copies, and CPU matrix products of equal
    tensors at different alignments can differ in the last bit; in fresh memory both models
    compute alike, so their latents can be compared exactly."""
    for part in model.pipe.components.values():
        if isinstance(part, torch.nn.Module):
            for tensor in [*part.parameters(), *part.buffers()]:
                tensor.data = tensor.data.clone()
    model._prompt_cache.clear()


def _assert_same_latents(got: Any, want: Any) -> None:
    """A 2-step DDIM inversion and its reconstruction: identical latents from both models."""
    _own_memory(got)
    _own_memory(want)
    image = _image(32)  # 32 pixels: every tiny model's size (Flux's own default is 512)
    a = unsample.invert(got, image, "a red circle", steps=2, guidance=2.0, fit="multiple")
    b = unsample.invert(want, image, "a red circle", steps=2, guidance=2.0, fit="multiple")
    assert torch.equal(a.image_latent, b.image_latent)
    assert torch.equal(a.trajectory, b.trajectory)
    assert torch.equal(unsample.reconstruct(got, a, output="latent"), unsample.reconstruct(want, b, output="latent"))


# --- SDXL: Stability's SGM layout ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def sdxl_file(tmp_path_factory: pytest.TempPathFactory, tiny_sdxl_pipeline_dir: Path) -> Path:
    from unsample_lab.testing.sdxl_checkpoint import save_sdxl_checkpoint

    return save_sdxl_checkpoint(tiny_sdxl_pipeline_dir, tmp_path_factory.mktemp("sgm") / "sdxl.safetensors")


@pytest.fixture(scope="module")
def sdxl(tiny_sdxl_pipeline_dir: Path) -> Any:
    return _load(tiny_sdxl_pipeline_dir)


def test_the_sdxl_file_has_the_original_layout(sdxl_file: Path) -> None:
    from unsample.backends.diffusers_common import single_file_shapes

    shapes = single_file_shapes(str(sdxl_file))
    assert {key.split(".")[0] for key in shapes} == {"model", "first_stage_model", "conditioner"}
    # add_embedding: the pooled projection (32) and 6 time ids x 8 channels in, 4 x 32 out
    assert shapes["model.diffusion_model.label_emb.0.0.weight"] == [128, 80]
    assert shapes["conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight"] == [96, 32]
    assert shapes["conditioner.embedders.1.model.text_projection"] == [32, 32]
    assert "conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight" in shapes
    open_clip_and_ldm = [key for key in shapes if not key.startswith("conditioner.embedders.0.")]
    assert not any("down_blocks" in key or "q_proj" in key for key in open_clip_and_ldm)


def test_sdxl_file_loads_every_weight_from_the_file(sdxl_file: Path, tiny_sdxl_pipeline_dir: Path, sdxl: Any,
                                                    tmp_path: Path, offline: None) -> None:
    from unsample.backends.diffusers_sdxl import StableDiffusionXLModel

    config = _config_only(tiny_sdxl_pipeline_dir, tmp_path / "sdxl-config")
    model = _load(sdxl_file, config)
    assert type(model) is StableDiffusionXLModel
    for part in ("unet", "vae", "text_encoder", "text_encoder_2"):
        _assert_same_weights(model, sdxl, part)
    assert model.fingerprint == sdxl.fingerprint
    assert model.pipe.vae.dtype == torch.float32 and model.pipe.config.force_zeros_for_empty_prompt


def test_sdxl_file_inverts_and_reconstructs_like_the_folder(sdxl_file: Path, tiny_sdxl_pipeline_dir: Path,
                                                            sdxl: Any, offline: None) -> None:
    _assert_same_latents(_load(sdxl_file, tiny_sdxl_pipeline_dir), sdxl)


# --- SD3: the MMDiT layout, with and without the text encoders -----------------------------------------------


@pytest.mark.parametrize("options", [{}, {"qk_norm": "rms_norm"}, {"qk_norm": "rms_norm", "dual_attention_layers": (0,)}],
                         ids=["sd3", "sd3.5-large", "sd3.5-medium"])
def test_mmdit_layout_round_trips_through_diffusers_converter(options: dict[str, Any]) -> None:
    """SD3's layout and SD3.5's (q/k RMS norms; Medium's second image attention), tensor for tensor."""
    from diffusers import SD3Transformer2DModel
    from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers

    from unsample_lab.testing.sd3_checkpoint import sd3_transformer_to_original

    torch.manual_seed(0)
    state = SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=16, out_channels=16, num_layers=2, attention_head_dim=8,
        num_attention_heads=4, joint_attention_dim=64, caption_projection_dim=32, pooled_projection_dim=48,
        pos_embed_max_size=16, **options,
    ).state_dict()
    original = {"model.diffusion_model." + key: value for key, value in sd3_transformer_to_original(state).items()}
    back = convert_sd3_transformer_checkpoint_to_diffusers(dict(original))
    assert back.keys() == state.keys()
    assert all(torch.equal(back[key], state[key]) for key in state)


@pytest.fixture(scope="module")
def sd3_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the SD3 files are written from: its CLIP-L projection is the identity, as diffusers
    reads an SD3 file's CLIP-L (seed 2: unlike the config folders' weights)."""
    from unsample_lab.testing.tiny_pipeline import build_tiny_sd3_pipeline

    folder = tmp_path_factory.mktemp("sd3-source") / "pipe"
    return build_tiny_sd3_pipeline(folder, seed=2, identity_clip_l_projection=True)


@pytest.fixture(scope="module")
def sd3_files(tmp_path_factory: pytest.TempPathFactory, sd3_source: Path) -> dict[str, Path]:
    from unsample_lab.testing.sd3_checkpoint import save_sd3_checkpoint

    out = tmp_path_factory.mktemp("sd3-files")
    kinds: dict[str, dict[str, bool]] = {
        "transformer+vae": {},
        "incl_clips": {"with_clips": True},
        "incl_clips_t5": {"with_clips": True, "with_t5": True},
        "transformer": {"with_vae": False},
    }
    return {kind: save_sd3_checkpoint(sd3_source, out / f"{kind}.safetensors", **kw) for kind, kw in kinds.items()}


@pytest.fixture(scope="module")
def sd3_models(sd3_source: Path, tiny_sd3_pipeline_dir: Path) -> dict[str, Any]:
    return {"source": _load(sd3_source), "config": _load(tiny_sd3_pipeline_dir)}


SD3_PARTS = ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3")


@pytest.mark.parametrize(
    ("kind", "from_file"),
    [
        ("transformer+vae", {"transformer", "vae"}),  # as sd3_medium.safetensors: the encoders are the folder's
        ("incl_clips", {"transformer", "vae", "text_encoder", "text_encoder_2"}),
        ("incl_clips_t5", set(SD3_PARTS)),
        ("transformer", {"transformer"}),  # the VAE too comes from the folder
    ],
)
def test_sd3_file_loads_its_parts_and_takes_the_rest_from_the_config(kind: str, from_file: set[str],
                                                                     sd3_files: dict[str, Path],
                                                                     tiny_sd3_pipeline_dir: Path,
                                                                     sd3_models: dict[str, Any], offline: None) -> None:
    model = _load(sd3_files[kind], tiny_sd3_pipeline_dir)
    for part in SD3_PARTS:
        _assert_same_weights(model, sd3_models["source" if part in from_file else "config"], part)


def test_sd3_file_with_everything_needs_no_weights_in_the_config(sd3_files: dict[str, Path], sd3_source: Path,
                                                                 sd3_models: dict[str, Any], tmp_path: Path,
                                                                 offline: None) -> None:
    model = _load(sd3_files["incl_clips_t5"], _config_only(sd3_source, tmp_path / "sd3-config"))
    for part in SD3_PARTS:
        _assert_same_weights(model, sd3_models["source"], part)
    assert model.fingerprint == sd3_models["source"].fingerprint


def test_sd3_file_inverts_and_reconstructs_like_the_folder(sd3_files: dict[str, Path], sd3_source: Path,
                                                           sd3_models: dict[str, Any], offline: None) -> None:
    _assert_same_latents(_load(sd3_files["transformer+vae"], sd3_source), sd3_models["source"])


def test_sd3_file_with_a_config_without_t5_loads_without_t5(sd3_files: dict[str, Path], sd3_models: dict[str, Any],
                                                            tiny_sd3_no_t5_pipeline_dir: Path, offline: None) -> None:
    no_t5 = _load(tiny_sd3_no_t5_pipeline_dir)
    model = _load(sd3_files["transformer+vae"], tiny_sd3_no_t5_pipeline_dir)
    assert model.pipe.text_encoder_3 is None and model.pipe.tokenizer_3 is None
    for part in ("transformer", "vae"):
        _assert_same_weights(model, sd3_models["source"], part)
    for part in ("text_encoder", "text_encoder_2"):
        _assert_same_weights(model, no_t5, part)
    cond, want = model.encode_prompt("a red circle"), no_t5.encode_prompt("a red circle")
    assert torch.equal(cond.embeds, want.embeds) and torch.equal(cond.pooled, want.pooled)
    assert cond.embeds.shape == (1, 12 + T5_TOKENS, 64)  # CLIP tokens, then zeros where T5's would be


def test_sd3_single_file_errors_are_one_line(sd3_files: dict[str, Path], sd3_source: Path,
                                             tiny_sd3_no_t5_pipeline_dir: Path, tiny_sdxl_pipeline_dir: Path,
                                             tmp_path: Path, offline: None) -> None:
    plain, full = str(sd3_files["transformer+vae"]), str(sd3_files["incl_clips_t5"])
    with pytest.raises(ValueError, match=r"^a single-file checkpoint needs config=FOLDER \(--model-config FOLDER in "):
        unsample.load(plain, device="cpu")
    with pytest.raises(ValueError, match=r"^config \(--model-config\) '.*absent' is not a local diffusers folder "):
        unsample.load(plain, config=str(tmp_path / "absent"), device="cpu")
    config = _config_only(sd3_source, tmp_path / "sd3-config")
    with pytest.raises(ValueError) as err:
        unsample.load(plain, config=str(config), device="cpu")
    assert str(err.value) == (
        f"{plain!r} has no text_encoder weights and the config folder {str(config)!r} has none either (text_encoder/ "
        "holds no weight files); give a config folder with the text_encoder weights, or a file that carries them"
    )
    with pytest.raises(ValueError) as err:
        unsample.load(full, config=str(tiny_sd3_no_t5_pipeline_dir), device="cpu")
    assert str(err.value) == (
        f"{full!r} carries a T5 text encoder but its config folder {str(tiny_sd3_no_t5_pipeline_dir)!r} was saved "
        "without one (text_encoder_3 is null), so diffusers has no T5 config to build it from; give the config "
        "folder of an SD3 pipeline with T5"
    )
    with pytest.raises(ValueError) as err:
        unsample.load(plain, config=str(tiny_sdxl_pipeline_dir), device="cpu")
    assert str(err.value) == (
        f"{plain!r} holds Stable Diffusion 3 weights (keys starting 'model.diffusion_model.joint_blocks.') but the "
        f"config folder {str(tiny_sdxl_pipeline_dir)!r} is StableDiffusionXLPipeline (SDXL); give a config folder of "
        "the same family"
    )


def test_a_weight_diffusers_leaves_unloaded_is_one_line(sd3_files: dict[str, Path], tiny_sd3_pipeline_dir: Path,
                                                        tmp_path: Path, offline: None) -> None:
    """A T5 stored as ``shared.weight`` alone (its tied ``encoder.embed_tokens`` left out): diffusers'
    T5 loader fills weights by name and leaves the other on the meta device."""
    from safetensors.torch import load_file, save_file

    state = load_file(sd3_files["incl_clips_t5"])
    del state["text_encoders.t5xxl.transformer.encoder.embed_tokens.weight"]
    file = tmp_path / "shared-only.safetensors"
    save_file(state, str(file))
    with pytest.raises(ValueError) as err:
        unsample.load(str(file), config=str(tiny_sd3_pipeline_dir), device="cpu")
    assert str(err.value) == (
        f"diffusers left 1 weight of {str(file)!r} unloaded (text_encoder_3.encoder.embed_tokens.weight): the file "
        "lacks them; give a file that carries them, or load the diffusers folder"
    )


def test_sd3_builder_refuses_a_clip_l_diffusers_would_not_read_back(tiny_sd3_pipeline_dir: Path,
                                                                    tmp_path: Path) -> None:
    from unsample_lab.testing.sd3_checkpoint import save_sd3_checkpoint

    with pytest.raises(ValueError, match="^diffusers loads an SD3 file's CLIP-L with an identity text_projection"):
        save_sd3_checkpoint(tiny_sd3_pipeline_dir, tmp_path / "x.safetensors", with_clips=True)


# --- Flux: the transformer alone ------------------------------------------------------------------------


def _flux_state_at_flux1_width(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tiny transformer's state dict with each single block's q/k/v and MLP projections as
    many rows as Flux.1's (3072, 3072, 3072, 12288: the split diffusers' converter has built in),
    one column wide, random; every other tensor as it is."""
    generator = torch.Generator().manual_seed(0)
    rows = {"attn.to_q": 3072, "attn.to_k": 3072, "attn.to_v": 3072, "proj_mlp": 12288}
    out = dict(state)
    for key in state:
        module, _, kind = key.rpartition(".")
        if key.startswith("single_transformer_blocks.") and module.split(".", 2)[2] in rows:
            n = rows[module.split(".", 2)[2]]
            out[key] = torch.randn((n, 1) if kind == "weight" else (n,), generator=generator)
    return out


@pytest.mark.parametrize("prefix", ["", "model.diffusion_model."])
def test_flux_bfl_layout_round_trips_through_diffusers_converter(tiny_flux_pipeline_dir: Path, prefix: str) -> None:
    from diffusers import FluxTransformer2DModel
    from diffusers.loaders.single_file_utils import (
        convert_flux_transformer_checkpoint_to_diffusers,
        infer_diffusers_model_type,
    )

    from unsample_lab.testing.flux_checkpoint import flux_transformer_to_bfl

    tiny = FluxTransformer2DModel.from_pretrained(tiny_flux_pipeline_dir / "transformer")
    state = _flux_state_at_flux1_width(tiny.state_dict())
    bfl = {prefix + key: value for key, value in flux_transformer_to_bfl(state).items()}
    assert infer_diffusers_model_type(bfl) == "flux-dev"  # guidance embedded, 64 input channels
    assert "double_blocks.0.img_attn.qkv.weight" in {key.removeprefix(prefix) for key in bfl}
    back = convert_flux_transformer_checkpoint_to_diffusers(dict(bfl))
    assert back.keys() == state.keys()
    assert all(torch.equal(back[key], state[key]) for key in state)


def test_flux_transformer_file_loads_with_the_rest_from_the_config(tiny_flux_pipeline_dir: Path, tmp_path: Path,
                                                                   offline: None) -> None:
    from unsample_lab.testing.flux_checkpoint import save_flux_checkpoint

    flux = _load(tiny_flux_pipeline_dir)
    file = save_flux_checkpoint(tiny_flux_pipeline_dir, tmp_path / "flux.safetensors", layout="diffusers")
    model = _load(file, tiny_flux_pipeline_dir)
    for part in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        _assert_same_weights(model, flux, part)
    _assert_same_latents(model, flux)


def test_a_flux_bfl_file_diffusers_cannot_convert_is_refused(tiny_flux_pipeline_dir: Path, tmp_path: Path,
                                                             offline: None) -> None:
    from unsample_lab.testing.flux_checkpoint import save_flux_checkpoint

    file = str(save_flux_checkpoint(tiny_flux_pipeline_dir, tmp_path / "flux1-tiny.safetensors"))
    with pytest.raises(ValueError) as err:
        unsample.load(file, config=str(tiny_flux_pipeline_dir), device="cpu")
    assert str(err.value) == (
        f"{file!r} is a Flux transformer 32 wide in the original (BFL) layout, and diffusers converts that layout only "
        "at Flux.1's width 3072 (convert_flux_transformer_checkpoint_to_diffusers has it built in); save the "
        "transformer in the diffusers layout (FluxTransformer2DModel.save_pretrained) and load that file or folder "
        "instead"
    )
