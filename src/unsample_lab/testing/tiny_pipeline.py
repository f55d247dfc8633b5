"""Build tiny, randomly initialised SD 1.x, SDXL, SD3, Flux and pixel DDPM pipelines in the diffusers layout.

The parts are the real classes at toy widths, so a test loads a folder through
`unsample.load(folder)` (or ``from_pretrained``) exactly as a user's checkpoint is loaded:

* SD 1.x: AutoencoderKL, CLIPTextModel, UNet2DConditionModel, DDIMScheduler with SD's
  scaled-linear betas.
* SD3: SD3Transformer2DModel, AutoencoderKL with SD3's scaling/shift factors, two
  CLIPTextModelWithProjection encoders, an optional T5EncoderModel and
  FlowMatchEulerDiscreteScheduler.
* Flux (dev-style, guidance embedded): FluxTransformer2DModel, AutoencoderKL with Flux's
  factors, CLIPTextModel, T5EncoderModel and FlowMatchEulerDiscreteScheduler with Flux's
  resolution-dependent shift.
* SDXL: UNet2DConditionModel with "text_time" added conditioning, CLIPTextModel and
  CLIPTextModelWithProjection, AutoencoderKL (force_upcast) and SDXL's EulerDiscreteScheduler.
* Pixel-space DDPM: UNet2DModel (optionally class-conditional and/or with learned variance)
  with a DDPMScheduler or DDIMScheduler, in the pipeline layout or google/ddpm's flat one.

CLIP tokenizers are local word-level tokenizers; the T5 tokenizer is a real ``T5Tokenizer``
over a word-piece vocabulary. Nothing is downloaded.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import torch

from unsample.backends.tokenizer import build_word_tokenizer
from unsample.errors import InputError

TINY_WORDS = (
    "a photo of the cat dog red green blue large small circle square on background "
    "painting sketch bright dark"
).split()


def build_tiny_pipeline(
    folder: str | Path,
    *,
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon",
    timestep_spacing: str = "leading",
    set_alpha_to_one: bool = False,
    seed: int = 0,
) -> Path:
    """Save a tiny random SD pipeline into ``folder`` (16x16 pixels, 8x8x4 latents); return it."""
    # heavy (diffusers' models): loaded on use
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel  # heavy (transformers' models): loaded on use

    folder = Path(folder)
    tokenizer = build_word_tokenizer(TINY_WORDS, max_length=12)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(32, 64),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=32,
        sample_size=16,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=tokenizer.model_max_length,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        clip_sample=False,
        set_alpha_to_one=set_alpha_to_one,
        steps_offset=1 if timestep_spacing == "leading" else 0,
        prediction_type=prediction_type,
        timestep_spacing=timestep_spacing,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return folder


def _build_t5_word_tokenizer(words: Iterable[str], *, max_length: int = 512):  # -> T5Tokenizer
    """Return a real ``T5Tokenizer`` whose unigram vocabulary is one piece per word, built offline.

    Ids follow T5: 0 = ``<pad>``, 1 = ``</s>``, 2 = ``<unk>``, 3 = ``▁`` (the word-start
    marker), then ``▁word`` for each word; prompts end with ``</s>`` and get no start token.
    No sentinel (``<extra_id_*>``) tokens. Like T5 it is case-sensitive: a word outside the
    list (or capitalised) becomes ``▁`` + ``<unk>``. It saves as ``T5Tokenizer`` and loads back
    with ``T5TokenizerFast``/``AutoTokenizer``, as a real SD3/Flux checkpoint's does.
    """
    from transformers import T5Tokenizer  # heavy (transformers' models): loaded on use

    marker = "\u2581"
    vocab: dict[str, float] = {"<pad>": 0.0, "</s>": 0.0, "<unk>": 0.0, marker: -10.0}
    for word in words:
        vocab.setdefault(marker + word.lower(), -1.0)  # whole words score far above a lone marker
    return T5Tokenizer(vocab=list(vocab.items()), extra_ids=0, model_max_length=max_length)


def _tiny_t5_encoder(vocab_size: int, d_model: int):  # -> T5EncoderModel
    """A one-layer T5 v1.1-style encoder (gated GELU) of width ``d_model``."""
    from transformers import T5Config, T5EncoderModel  # heavy (transformers' models): loaded on use

    return T5EncoderModel(
        T5Config(
            vocab_size=vocab_size,
            d_model=d_model,
            d_kv=8,
            d_ff=37,
            num_layers=1,
            num_heads=4,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=32,
            feed_forward_proj="gated-gelu",
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    )


def _tiny_clip_config(tokenizer, *, hidden_size: int, projection_dim: int | None = None):  # -> CLIPTextConfig
    """A two-layer CLIP text config whose special-token ids are ``tokenizer``'s."""
    from transformers import CLIPTextConfig  # heavy (transformers' models): loaded on use

    extra = {} if projection_dim is None else {"projection_dim": projection_dim}
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )


def _tiny_flow_vae(*, scaling_factor: float, shift_factor: float):  # -> AutoencoderKL
    """A three-level AutoencoderKL (pixels / 4) with 16 latent channels and no quant convs, as SD3/Flux."""
    from diffusers import AutoencoderKL  # heavy (diffusers' models): loaded on use

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 32),
        latent_channels=16,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=32,
        scaling_factor=scaling_factor,
        shift_factor=shift_factor,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )


def build_tiny_sd3_pipeline(
    folder: str | Path,
    *,
    with_t5: bool = True,
    shift: float = 3.0,
    seed: int = 0,
    identity_clip_l_projection: bool = False,
) -> Path:
    """Save a tiny random SD3 pipeline into ``folder`` (32x32 pixels, 16x8x8 latents); return it.

    Widths mirror SD3's layout at toy scale: CLIP-L-like (16) and CLIP-G-like (32) encoders
    whose pooled projections concatenate to the transformer's ``pooled_projection_dim`` (48),
    and whose hidden states (48 together) are zero-padded to the T5 width (64, the
    ``joint_attention_dim``). Without T5 the pipeline feeds zeros in its place, as diffusers does;
    ``model_index.json`` then records ``text_encoder_3``/``tokenizer_3`` as null, and diffusers
    0.42 loads such a folder only when told ``text_encoder_3=None, tokenizer_3=None`` (they are
    not among SD3's optional components), exactly as for a real SD3 checkpoint loaded without T5.
    With ``identity_clip_l_projection`` the CLIP-L encoder's ``text_projection`` is the identity,
    as diffusers loads it from SD3's single files (which pool CLIP-L unprojected).
    """
    # heavy (diffusers' models): loaded on use
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection  # heavy (transformers' models): loaded on use

    folder = Path(folder)
    clip_l_width, clip_g_width, t5_width = 16, 32, 64
    tokenizer = build_word_tokenizer(TINY_WORDS, max_length=12)
    tokenizer_2 = build_word_tokenizer(TINY_WORDS, max_length=12)
    tokenizer_3 = _build_t5_word_tokenizer(TINY_WORDS) if with_t5 else None
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=t5_width,
        caption_projection_dim=32,
        pooled_projection_dim=clip_l_width + clip_g_width,
        pos_embed_max_size=16,
    )
    vae = _tiny_flow_vae(scaling_factor=1.5305, shift_factor=0.0609)
    text_encoder = CLIPTextModelWithProjection(
        _tiny_clip_config(tokenizer, hidden_size=clip_l_width, projection_dim=clip_l_width)
    )
    if identity_clip_l_projection:
        with torch.no_grad():
            text_encoder.text_projection.weight.copy_(torch.eye(clip_l_width))
    text_encoder_2 = CLIPTextModelWithProjection(
        _tiny_clip_config(tokenizer_2, hidden_size=clip_g_width, projection_dim=clip_g_width)
    )
    text_encoder_3 = _tiny_t5_encoder(len(tokenizer_3), t5_width) if tokenizer_3 is not None else None
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        text_encoder_3=text_encoder_3,
        tokenizer_3=tokenizer_3,
    )
    pipe.save_pretrained(folder)
    return folder


def build_tiny_flux_pipeline(folder: str | Path, *, seed: int = 0) -> Path:
    """Save a tiny random Flux-dev-style pipeline into ``folder`` (32x32 pixels); return it.

    Latents are 16x8x8, packed by the pipeline into 2x2 patches: 16 tokens of 64 channels
    (the transformer's ``in_channels``). Guidance is embedded (``guidance_embeds=True``) as in
    Flux-dev; the pooled CLIP output (32) is the ``pooled_projection_dim`` and the T5 width
    (48) the ``joint_attention_dim``. The scheduler uses Flux's resolution-dependent shift.
    """
    # heavy (diffusers' models): loaded on use
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel  # heavy (transformers' models): loaded on use

    folder = Path(folder)
    clip_width, t5_width = 32, 48
    tokenizer = build_word_tokenizer(TINY_WORDS, max_length=12)
    tokenizer_2 = _build_t5_word_tokenizer(TINY_WORDS)
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4 * 16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=t5_width,
        pooled_projection_dim=clip_width,
        guidance_embeds=True,
        axes_dims_rope=(4, 6, 6),
    )
    vae = _tiny_flow_vae(scaling_factor=0.3611, shift_factor=0.1159)
    text_encoder = CLIPTextModel(_tiny_clip_config(tokenizer, hidden_size=clip_width))
    text_encoder_2 = _tiny_t5_encoder(len(tokenizer_2), t5_width)
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    pipe = FluxPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )
    pipe.save_pretrained(folder)
    return folder


def build_tiny_sdxl_pipeline(
    folder: str | Path,
    *,
    seed: int = 0,
    force_zeros_for_empty_prompt: bool = True,
) -> Path:
    """Save a tiny random SDXL pipeline into ``folder`` (32x32 pixels, 4x8x8 latents); return it.

    SDXL's conditioning at toy scale: a CLIP-L-like ``text_encoder`` (width 16) and a
    CLIP-bigG-like ``text_encoder_2`` (width 32, projection 32) whose penultimate hidden states
    concatenate to the UNet's ``cross_attention_dim`` (48); the pooled projection (32) and six
    size/crop ids, each embedded in ``addition_time_embed_dim`` (8) channels, make the
    ``text_time`` added embedding (``projection_class_embeddings_input_dim`` = 32 + 6 * 8 = 80).
    The cross-attention block has two transformer layers (``transformer_layers_per_block``
    (1, 2); the mid block takes the last, 2) with linear projections, as SDXL's. The VAE
    (pixels / 4) carries SDXL's scaling factor and ``force_upcast=True``; the scheduler is
    SDXL's shipped Euler config (scaled-linear betas, "leading" spacing, ``steps_offset`` 1).
    """
    from diffusers import (  # heavy (diffusers' models): loaded on use
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTextModelWithProjection  # heavy (transformers' models): loaded on use

    folder = Path(folder)
    clip_l_width, clip_g_width, time_dim = 16, 32, 8
    tokenizer = build_word_tokenizer(TINY_WORDS, max_length=12)
    tokenizer_2 = build_word_tokenizer(TINY_WORDS, max_length=12)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        cross_attention_dim=clip_l_width + clip_g_width,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=clip_g_width + 6 * time_dim,
        norm_num_groups=32,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 32),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=32,
        scaling_factor=0.13025,
        force_upcast=True,
    )
    text_encoder = CLIPTextModel(_tiny_clip_config(tokenizer, hidden_size=clip_l_width))
    text_encoder_2 = CLIPTextModelWithProjection(
        _tiny_clip_config(tokenizer_2, hidden_size=clip_g_width, projection_dim=clip_g_width)
    )
    scheduler = EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        interpolation_type="linear",
        use_karras_sigmas=False,
        timestep_spacing="leading",
        steps_offset=1,
    )
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=force_zeros_for_empty_prompt,
        add_watermarker=False,
    )
    pipe.save_pretrained(folder)
    return folder


def build_tiny_ddpm_pipeline(
    folder: str | Path,
    *,
    layout: Literal["pipeline", "flat"] = "pipeline",
    scheduler: Literal["ddpm", "ddim"] = "ddpm",
    num_class_embeds: int | None = None,
    learned_variance: bool = False,
    seed: int = 0,
) -> Path:
    """Save a tiny random pixel-space ``UNet2DModel`` and its scheduler into ``folder``; return it.

    The UNet works on 3x16x16 images (two levels, widths 16/32, self-attention at 8x8) with
    google/ddpm's settings (``flip_sin_to_cos=False``, ``freq_shift=1``, ``downsample_padding=0``,
    ``norm_eps=1e-6``). With ``learned_variance`` it outputs 6 channels, the noise then the
    variance interpolation, as guided-diffusion; the DDPM scheduler is then
    ``variance_type="learned_range"`` (it splits the output itself), else "fixed_small". The
    DDIM scheduler has no such setting and cannot step a 6-channel output: the caller must
    split it off. ``num_class_embeds`` adds a class embedding, after which the UNet requires
    ``class_labels`` (so ``DDPMPipeline.__call__``, which passes none, cannot run it).

    ``layout="pipeline"``: ``DDPMPipeline``/``DDIMPipeline.save_pretrained`` (``model_index.json``
    with ``unet/`` and ``scheduler/``). ``layout="flat"``: google/ddpm-cifar10-32's hub layout:
    the UNet's ``config.json`` and ``diffusion_pytorch_model.safetensors`` at the root next to
    ``scheduler_config.json`` and a hand-written ``model_index.json`` naming the pipeline and its
    ``unet``/``scheduler``. diffusers 0.42 loads that too: a component without its subfolder is
    loaded from the root.
    """
    # heavy (diffusers' models): loaded on use
    from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline, DDPMScheduler, UNet2DModel
    from diffusers import __version__ as diffusers_version

    if layout not in ("pipeline", "flat"):
        raise InputError(f"layout={layout!r}; use 'pipeline' or 'flat'")
    if scheduler not in ("ddpm", "ddim"):
        raise InputError(f"scheduler={scheduler!r}; use 'ddpm' or 'ddim'")
    folder = Path(folder)
    torch.manual_seed(seed)
    unet = UNet2DModel(
        sample_size=16,
        in_channels=3,
        out_channels=6 if learned_variance else 3,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=8,
        norm_num_groups=8,
        norm_eps=1e-6,
        flip_sin_to_cos=False,
        freq_shift=1,
        downsample_padding=0,
        num_class_embeds=num_class_embeds,
    )
    betas = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear"}
    if scheduler == "ddpm":
        noise_scheduler: DDPMScheduler | DDIMScheduler = DDPMScheduler(
            **betas,  # type: ignore[arg-type]
            variance_type="learned_range" if learned_variance else "fixed_small",
            clip_sample=True,
        )
        pipeline_class: type[DDPMPipeline] | type[DDIMPipeline] = DDPMPipeline
    else:
        noise_scheduler = DDIMScheduler(**betas, clip_sample=True)  # type: ignore[arg-type]
        pipeline_class = DDIMPipeline
    if layout == "pipeline":
        pipeline_class(unet=unet, scheduler=noise_scheduler).save_pretrained(folder)
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(folder)
    noise_scheduler.save_pretrained(folder)
    model_index = {
        "_class_name": pipeline_class.__name__,
        "_diffusers_version": diffusers_version,
        "scheduler": ["diffusers", type(noise_scheduler).__name__],
        "unet": ["diffusers", "UNet2DModel"],
    }
    (folder / "model_index.json").write_text(json.dumps(model_index, indent=2) + "\n", encoding="utf-8")
    return folder
