"""Build tiny, randomly initialised SD 1.x, SD3 and Flux pipelines and save them in the diffusers layout.

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

CLIP tokenizers are local word-level tokenizers; the T5 tokenizer is a real ``T5Tokenizer``
over a word-piece vocabulary. Nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

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
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from unsample.backends.tokenizer import build_word_tokenizer

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
    from transformers import T5Tokenizer

    marker = "\u2581"
    vocab: dict[str, float] = {"<pad>": 0.0, "</s>": 0.0, "<unk>": 0.0, marker: -10.0}
    for word in words:
        vocab.setdefault(marker + word.lower(), -1.0)  # whole words score far above a lone marker
    return T5Tokenizer(vocab=list(vocab.items()), extra_ids=0, model_max_length=max_length)


def _tiny_t5_encoder(vocab_size: int, d_model: int):  # -> T5EncoderModel
    """A one-layer T5 v1.1-style encoder (gated GELU) of width ``d_model``."""
    from transformers import T5Config, T5EncoderModel

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
    from transformers import CLIPTextConfig

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
    from diffusers import AutoencoderKL

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
) -> Path:
    """Save a tiny random SD3 pipeline into ``folder`` (32x32 pixels, 16x8x8 latents); return it.

    Widths mirror SD3's layout at toy scale: CLIP-L-like (16) and CLIP-G-like (32) encoders
    whose pooled projections concatenate to the transformer's ``pooled_projection_dim`` (48),
    and whose hidden states (48 together) are zero-padded to the T5 width (64, the
    ``joint_attention_dim``). Without T5 the pipeline feeds zeros in its place, as diffusers does;
    ``model_index.json`` then records ``text_encoder_3``/``tokenizer_3`` as null, and diffusers
    0.42 loads such a folder only when told ``text_encoder_3=None, tokenizer_3=None`` (they are
    not among SD3's optional components), exactly as for a real SD3 checkpoint loaded without T5.
    """
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    from unsample.backends.tokenizer import build_word_tokenizer

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
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    from unsample.backends.tokenizer import build_word_tokenizer

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
