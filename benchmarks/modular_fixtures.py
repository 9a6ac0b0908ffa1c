"""Tiny random Modular Diffusers pipelines, built offline (no Hub), for tests and benchmarks.

    pipe, kwargs = build_tiny_modular("flux2")
    state = pipe(**kwargs)                     # a PipelineState; pipe(**kwargs, output="images") for the images

Each builder takes the model's auto blocks, drops the blocks that need text encoders / prompt upsamplers /
image encoders (the call passes random prompt embeddings instead), creates the pipeline with `init_pipeline()` and
sets tiny random components with `update_components()`. Latent channel counts and VAE scale factors follow the real
models where that stays cheap (FLUX.2: 32 channels, 128 packed, 8x; SDXL: 4 channels, 8x; Wan: 16 channels, 8x
spatial, 4x temporal). `no_decode=True` also drops the decode block, so `pipe(**kwargs, output="latents")` returns
the denoising loop's final latents. 2 steps each, a second or less on CPU.

MODELS lists the names `build_tiny_modular` knows.
"""

import torch

STEPS = 2


def _blocks(name: str, drop=(), no_decode: bool = False):
    import diffusers

    blocks = getattr(diffusers, name)()
    for key in list(drop) + (["decode"] if no_decode else []):
        blocks.sub_blocks.pop(key)
    return blocks


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _generator(seed=0):
    return torch.Generator().manual_seed(seed)


def flux2(no_decode: bool = False):
    """FLUX.2 [klein] blocks (Flux2KleinAutoBlocks), text-to-image, AutoencoderKLFlux2 with 32 latent channels."""
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        Flux2Transformer2DModel,
    )

    pipe = _blocks("Flux2KleinAutoBlocks", ["text_encoder"], no_decode).init_pipeline()
    torch.manual_seed(0)
    transformer = Flux2Transformer2DModel(
        patch_size=1, in_channels=128, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=16, timestep_guidance_channels=256, axes_dims_rope=[4, 4, 4, 4],
        guidance_embeds=False)
    vae = flux2_vae()
    pipe.update_components(transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler())
    kwargs = dict(prompt_embeds=_randn(1, 8, 16), height=64, width=64, num_inference_steps=STEPS,
                  generator=_generator(), output_type="pt")
    return pipe, kwargs


def flux2_vae():
    """A tiny AutoencoderKLFlux2: 32 latent channels, 8x (four blocks), as FLUX.2's."""
    from diffusers import AutoencoderKLFlux2

    torch.manual_seed(0)
    return AutoencoderKLFlux2(
        sample_size=32, in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
        latent_channels=32, norm_num_groups=4, use_quant_conv=False, use_post_quant_conv=False)


def wan(no_decode: bool = False):
    """Wan 2.1 text-to-video blocks (WanBlocks), AutoencoderKLWan with 16 channels, UniPC flow scheduler;
    9 frames of 32x32 (3 latent frames of 4x4)."""
    from diffusers import (
        AutoencoderKLWan,
        UniPCMultistepScheduler,
        WanTransformer3DModel,
    )

    pipe = _blocks("WanBlocks", ["text_encoder"], no_decode).init_pipeline()
    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    torch.manual_seed(0)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32)
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    pipe.update_components(transformer=transformer, vae=vae, scheduler=scheduler)
    kwargs = dict(prompt_embeds=_randn(1, 8, 32), negative_prompt_embeds=_randn(1, 8, 32, seed=1), height=32,
                  width=32, num_frames=9, num_inference_steps=STEPS, generator=_generator(), output_type="pt")
    return pipe, kwargs


def sdxl(no_decode: bool = False):
    """SDXL blocks (StableDiffusionXLAutoBlocks), text-to-image, tiny UNet, AutoencoderKL 4 channels 8x (4 blocks),
    Euler scheduler."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel

    pipe = _blocks("StableDiffusionXLAutoBlocks", ["text_encoder", "ip_adapter", "vae_encoder"],
                   no_decode).init_pipeline()
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(2, 4), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=80,
        cross_attention_dim=64, norm_num_groups=1)
    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=[4, 4, 4, 4], in_channels=3, out_channels=3,
                        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                        latent_channels=4, norm_num_groups=2, sample_size=64)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, steps_offset=1,
                                       beta_schedule="scaled_linear", timestep_spacing="leading")
    pipe.update_components(unet=unet, vae=vae, scheduler=scheduler)
    kwargs = dict(prompt_embeds=_randn(1, 8, 64), negative_prompt_embeds=_randn(1, 8, 64, seed=1),
                  pooled_prompt_embeds=_randn(1, 32, seed=2), negative_pooled_prompt_embeds=_randn(1, 32, seed=3),
                  height=64, width=64, num_inference_steps=STEPS, generator=_generator(), output_type="pt")
    return pipe, kwargs


def qwenimage(no_decode: bool = False):
    """Qwen-Image text-to-image blocks (QwenImageAutoBlocks), AutoencoderKLQwenImage with 16 channels, 8x."""
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImageTransformer2DModel,
    )

    pipe = _blocks("QwenImageAutoBlocks", ["text_encoder", "vae_encoder", "controlnet_vae_encoder"],
                   no_decode).init_pipeline()
    torch.manual_seed(0)
    transformer = QwenImageTransformer2DModel(
        patch_size=2, in_channels=64, out_channels=16, num_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=16, guidance_embeds=False, axes_dims_rope=(8, 4, 4))
    torch.manual_seed(0)
    vae = AutoencoderKLQwenImage(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                 temperal_downsample=[False, True, True], latents_mean=[0.0] * 16,
                                 latents_std=[1.0] * 16)
    pipe.update_components(transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler())
    mask = torch.ones(1, 8, dtype=torch.long)
    kwargs = dict(prompt_embeds=_randn(1, 8, 16), prompt_embeds_mask=mask,
                  negative_prompt_embeds=_randn(1, 8, 16, seed=1), negative_prompt_embeds_mask=mask,
                  height=64, width=64, num_inference_steps=STEPS, generator=_generator(), output_type="pt")
    return pipe, kwargs


def z_image(no_decode: bool = False):
    """Z-Image text-to-image blocks (ZImageAutoBlocks), AutoencoderKL with 16 channels, 8x."""
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        ZImageTransformer2DModel,
    )

    pipe = _blocks("ZImageAutoBlocks", ["text_encoder", "vae_encoder"], no_decode).init_pipeline()
    torch.manual_seed(0)
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=32, n_layers=1, n_refiner_layers=1,
        n_heads=2, n_kv_heads=2, norm_eps=1e-5, qk_norm=True, cap_feat_dim=16, rope_theta=256.0, t_scale=1000.0,
        axes_dims=[8, 4, 4], axes_lens=[256, 32, 32])
    with torch.no_grad():
        transformer.x_pad_token.copy_(torch.ones_like(transformer.x_pad_token))
        transformer.cap_pad_token.copy_(torch.ones_like(transformer.cap_pad_token))
    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
                        up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[8, 8, 8, 8], layers_per_block=1,
                        latent_channels=16, norm_num_groups=4, sample_size=64, scaling_factor=0.3611,
                        shift_factor=0.1159)
    pipe.update_components(transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler())
    kwargs = dict(prompt_embeds=[_randn(8, 16)], negative_prompt_embeds=[_randn(8, 16, seed=1)], height=64,
                  width=64, num_inference_steps=STEPS, generator=_generator(), output_type="pt")
    return pipe, kwargs


def ltx(no_decode: bool = False):
    """LTX-Video text-to-video blocks (LTXAutoBlocks), AutoencoderKLLTXVideo with 8 channels; 9 frames of 32x32."""
    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXVideoTransformer3DModel,
    )

    pipe = _blocks("LTXAutoBlocks", ["text_encoder", "vae_encoder"], no_decode).init_pipeline()
    torch.manual_seed(0)
    transformer = LTXVideoTransformer3DModel(
        in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=4, attention_head_dim=8,
        cross_attention_dim=32, num_layers=1, caption_channels=32)
    torch.manual_seed(0)
    vae = AutoencoderKLLTXVideo(
        in_channels=3, out_channels=3, latent_channels=8, block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1), spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False),
        decoder_inject_noise=(False, False, False, False, False), upsample_residual=(False, False, False, False),
        upsample_factor=(1, 1, 1, 1), timestep_conditioning=False, patch_size=1, patch_size_t=1,
        encoder_causal=True, decoder_causal=False)
    vae.use_framewise_encoding = False
    vae.use_framewise_decoding = False
    pipe.update_components(transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler())
    mask = torch.ones(1, 8, dtype=torch.long)
    kwargs = dict(prompt_embeds=_randn(1, 8, 32), prompt_attention_mask=mask,
                  negative_prompt_embeds=_randn(1, 8, 32, seed=1), negative_prompt_attention_mask=mask,
                  height=32, width=32, num_frames=9, num_inference_steps=STEPS, generator=_generator(),
                  output_type="pt")
    return pipe, kwargs


def flux3(no_decode: bool = False):
    """FLUX.3 text-to-image blocks (Flux3AutoBlocks, prompt upsampler and text encoder dropped),
    AutoencoderKLFlux2 with 32 latent channels (128 packed), 8x."""
    from diffusers import FlowMatchEulerDiscreteScheduler, Flux3Transformer2DModel

    pipe = _blocks("Flux3AutoBlocks", ["prompt_upsampler", "text_encoder", "vae_encoder"], no_decode).init_pipeline()
    torch.manual_seed(0)
    transformer = Flux3Transformer2DModel(
        in_channels=128, cond_in_channels=128, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=16, axes_dims_rope=(4, 4, 4, 4))
    pipe.update_components(transformer=transformer, vae=flux2_vae(), scheduler=FlowMatchEulerDiscreteScheduler())
    kwargs = dict(prompt_embeds=_randn(1, 8, 16), negative_prompt_embeds=_randn(1, 8, 16, seed=1), height=64,
                  width=64, num_inference_steps=STEPS, generator=_generator(), output_type="pt")
    return pipe, kwargs


BUILDERS = {"flux2": flux2, "flux3": flux3, "wan": wan, "ltx": ltx, "sdxl": sdxl, "qwenimage": qwenimage,
            "z_image": z_image}
MODELS = tuple(BUILDERS)


def build_tiny_modular(name: str, no_decode: bool = False):
    """(pipe, call kwargs) of a tiny random modular pipeline of model `name` (see MODELS)."""
    if name not in BUILDERS:
        raise ValueError(f"no tiny modular pipeline {name!r}; known: {', '.join(MODELS)}")
    return BUILDERS[name](no_decode=no_decode)
