"""Build a tiny, randomly initialised Stable Diffusion pipeline and save it in the diffusers layout.

The parts are the real SD classes (AutoencoderKL, CLIPTextModel, UNet2DConditionModel,
DDIMScheduler with SD's scaled-linear betas) at toy widths, with a local word-level tokenizer,
so a test loads it through `unsample.load(folder)` exactly as a user's checkpoint is loaded.
"""

from __future__ import annotations

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
