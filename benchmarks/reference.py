"""Full-size diffusers models the previewers are compared with, built from config with random weights.

Their cost does not depend on the weight values (DESIGN.md, "Measuring"), so nothing is
downloaded. The configs mirror the public `config.json` files of the models named; keys not
given are diffusers' defaults, which equal the public values.
"""

import diffusers
import torch

# runwayml/stable-diffusion-v1-5, vae/config.json (SD 2.x and SDXL use the same decoder).
SD15_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, sample_size=512, scaling_factor=0.18215,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32, act_fn="silu",
)
# black-forest-labs/FLUX.1-dev, vae/config.json (SD3's VAE is the same but for scale and shift).
FLUX1_VAE = dict(
    SD15_VAE, latent_channels=16, sample_size=1024, scaling_factor=0.3611, shift_factor=0.1159,
    use_quant_conv=False, use_post_quant_conv=False,
)
# runwayml/stable-diffusion-v1-5, unet/config.json.
SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, cross_attention_dim=768,
    attention_head_dim=8, block_out_channels=(320, 640, 1280, 1280), norm_num_groups=32,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
)
# runwayml/stable-diffusion-v1-5, scheduler/scheduler_config.json (PNDM, as the pipeline ships).
SD15_SCHEDULER = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
    skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False,
)

# The full VAE decode each latent space is compared with, and what it stands for.
FULL_VAES = {
    4: ("SD 1.5 AutoencoderKL", "AutoencoderKL", SD15_VAE),
    16: ("FLUX.1 AutoencoderKL (16 ch)", "AutoencoderKL", FLUX1_VAE),
    # FLUX.2: diffusers' AutoencoderKLFlux2 with its default config (32 latent channels, the
    # decoder blocks of FLUX.1), timed on the unpatchified (B, 32, h, w) latent.
    32: ("FLUX.2 AutoencoderKLFlux2 (32 ch)", "AutoencoderKLFlux2", {}),
}


def full_vae(latent_channels: int, device="cpu", dtype=torch.float32):
    """(label, vae) of the full-size VAE for `latent_channels`-channel latents, random weights, eval mode."""
    if latent_channels not in FULL_VAES:
        raise ValueError(f"no full-size VAE config for {latent_channels}-channel latents (have {sorted(FULL_VAES)})")
    label, cls, config = FULL_VAES[latent_channels]
    vae = getattr(diffusers, cls)(**config)
    return label, vae.to(device, dtype).eval().requires_grad_(False)


def decoder_parameters(vae) -> int:
    """Parameters used by `vae.decode`: the decoder and the post-quant conv where there is one."""
    modules = [vae.decoder] + ([vae.post_quant_conv] if getattr(vae, "post_quant_conv", None) is not None else [])
    return sum(p.numel() for m in modules for p in m.parameters())


def sd15_scheduler():
    return diffusers.PNDMScheduler(**SD15_SCHEDULER)
