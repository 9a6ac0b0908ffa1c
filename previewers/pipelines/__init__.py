"""Pipeline integration: where a diffusers pipeline's step latents become previews (latent conventions and layouts,
choosing the previewer, the step callback, preview steps in Modular Diffusers, x0 estimates, the VAE as previewer)."""
