"""Noised latents: where a sampler's intermediate steps sit, for fitting and for evaluation.

Fitting follows a real training trajectory, so previews of intermediate steps are fitted too:
- "ddpm" spaces (sd1, sdxl): z_t = sqrt(ᾱ_t)·z + sqrt(1 − ᾱ_t)·ε, t uniform over the 1000
  training timesteps, ᾱ from diffusers' DDPMScheduler built with Stable Diffusion's scheduler config;
- "flow" spaces (sd3, flux1, flux2): z_σ = (1 − σ)·z + σ·ε, σ uniform in [0, 1].
Evaluation uses one fixed point in every space, z_s = (1 − s)·z + s·ε with s = 0.5, so numbers
compare across spaces and with the held-out checks.
"""

import torch

# Stable Diffusion 1.x/2.x/XL's scheduler_config.json (the noise schedule both were trained with).
SD_SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
}
EVAL_NOISE = 0.5


def ddpm_alphas_cumprod() -> torch.Tensor:
    """ᾱ_t for t = 0..999, (1000,) float32 decreasing from ~1 to ~0.005."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(**SD_SCHEDULER_CONFIG).alphas_cumprod.float()


def trajectory_noise(latents: torch.Tensor, noise: str, generator: torch.Generator) -> torch.Tensor:
    """Each latent of (B, C, h, w) moved to a random point of its space's noising trajectory."""
    n = latents.shape[0]
    eps = torch.randn(latents.shape, generator=generator)
    if noise == "ddpm":
        alphas = ddpm_alphas_cumprod()
        t = torch.randint(len(alphas), (n,), generator=generator)
        a = alphas[t].view(n, 1, 1, 1)
        return a.sqrt() * latents + (1 - a).sqrt() * eps
    if noise == "flow":
        sigma = torch.rand(n, generator=generator).view(n, 1, 1, 1)
        return (1 - sigma) * latents + sigma * eps
    raise ValueError(f"unknown noising trajectory {noise!r} (expected 'ddpm' or 'flow')")


def eval_noise(latents: torch.Tensor, generator: torch.Generator, s: float = EVAL_NOISE) -> torch.Tensor:
    """z_s = (1 − s)·z + s·ε, the noised latents every space is evaluated on."""
    return (1 - s) * latents + s * torch.randn(latents.shape, generator=generator)
