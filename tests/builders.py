"""Builders shared by the test modules: tiny random diffusers pipelines and VAEs, test images, a fake teacher.

Everything here runs on a CPU in seconds. diffusers and transformers are imported inside the builders, so a module
importing this one still collects where they are not installed (those modules skip with pytest.importorskip).
The fixtures built from these (`photos`, `one_thread`, `shared`) are in conftest.py.
"""

import json

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from previewers import PreviewCallback
from previewers.models.families import affine

SIZE = 16  # image pixels of the tiny pipelines; their VAEs compress 2x, so latents are 8x8
STEPS = 4  # denoising steps of `run` unless given
FRAMES = 5  # video frames of the tiny Wan pipeline; its VAE compresses time 2x: 3 latent frames
MEAN, STD = [0.1, -0.2, 0.3, 0.0], [1.5, 0.8, 2.0, 1.2]  # Qwen-Image/Wan VAE statistics, not 0/1: a missing
# de-normalisation shows

# the latent conventions of the shipped spaces (SD 1.x/SDXL/SD3/FLUX.1/FLUX.2), and three pipelines with latents
# of their own: Qwen-Image (2x2 patch tokens), Wan 2.1 (5-D video latents), Chroma (FLUX.1's VAE)
SHIPPED_SPACE_KINDS = ("sd", "sdxl", "sd3", "flux1", "flux2")
OTHER_KINDS = ("qwenimage", "wan", "chroma")


def tiny_vae(channels, cls=None, **config):
    """A random 2x diffusers VAE (AutoencoderKL unless `cls`) with `channels`-channel latents."""
    import diffusers

    cls = cls or diffusers.AutoencoderKL
    return cls(block_out_channels=(8, 8), layers_per_block=1, norm_num_groups=2, latent_channels=channels,
               down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, **config)


def tiny_unet(xl=False):
    import diffusers

    extra = dict(addition_embed_type="text_time", addition_time_embed_dim=8, projection_class_embeddings_input_dim=8 * 6 + 16) if xl else {}
    return diffusers.UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4, norm_num_groups=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, attention_head_dim=4, **extra)


def sd_scheduler():
    import diffusers

    return diffusers.EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1)


def tiny_pipeline(kind, **vae_config):
    """(pipeline, call kwargs) of a tiny random diffusers pipeline: text encoders left out, prompts given as random
    embeddings. `kind`: one of SHIPPED_SPACE_KINDS or OTHER_KINDS; `vae_config` replaces Chroma's VAE config
    (by default a FLUX.1-like VAE with another scale and shift, so not FLUX.1's space)."""
    import diffusers

    torch.manual_seed(0)
    emb = lambda *shape: torch.randn(*shape)  # noqa: E731
    flow = diffusers.FlowMatchEulerDiscreteScheduler
    if kind in ("sd", "sdxl"):
        vae = tiny_vae(4, scaling_factor=0.13025) if kind == "sdxl" else tiny_vae(4)  # SDXL's VAE config
        common = dict(vae=vae, unet=tiny_unet(kind == "sdxl"), scheduler=sd_scheduler(), text_encoder=None, tokenizer=None)
        kwargs = dict(prompt_embeds=emb(1, 5, 16), negative_prompt_embeds=emb(1, 5, 16))
        if kind == "sd":
            return diffusers.StableDiffusionPipeline(**common, safety_checker=None, feature_extractor=None,
                                                     requires_safety_checker=False), kwargs
        kwargs.update(pooled_prompt_embeds=emb(1, 16), negative_pooled_prompt_embeds=emb(1, 16))
        return diffusers.StableDiffusionXLPipeline(**common, text_encoder_2=None, tokenizer_2=None), kwargs
    if kind == "sd3":
        transformer = diffusers.SD3Transformer2DModel(
            sample_size=8, patch_size=1, in_channels=16, out_channels=16, num_layers=1, attention_head_dim=8,
            num_attention_heads=2, caption_projection_dim=16, joint_attention_dim=16, pooled_projection_dim=16)
        pipe = diffusers.StableDiffusion3Pipeline(
            transformer=transformer, scheduler=flow(), vae=tiny_vae(16, shift_factor=0.0609, scaling_factor=1.5305),
            text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None, text_encoder_3=None, tokenizer_3=None)
        return pipe, dict(prompt_embeds=emb(1, 5, 16), negative_prompt_embeds=emb(1, 5, 16),
                          pooled_prompt_embeds=emb(1, 16), negative_pooled_prompt_embeds=emb(1, 16))
    if kind == "flux1":
        transformer = diffusers.FluxTransformer2DModel(
            patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=8, num_attention_heads=2,
            joint_attention_dim=16, pooled_projection_dim=16, axes_dims_rope=(2, 2, 4))
        pipe = diffusers.FluxPipeline(scheduler=flow(), vae=tiny_vae(16, shift_factor=0.1159, scaling_factor=0.3611),
                                      text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None,
                                      transformer=transformer)
        return pipe, dict(prompt_embeds=emb(1, 5, 16), pooled_prompt_embeds=emb(1, 16))
    if kind == "flux2":
        transformer = diffusers.Flux2Transformer2DModel(
            patch_size=1, in_channels=128, num_layers=1, num_single_layers=1, attention_head_dim=8, num_attention_heads=2,
            joint_attention_dim=16, axes_dims_rope=(2, 2, 2, 2))
        pipe = diffusers.Flux2Pipeline(scheduler=flow(), vae=tiny_vae(32, diffusers.AutoencoderKLFlux2), text_encoder=None,
                                       tokenizer=None, transformer=transformer)
        return pipe, dict(prompt_embeds=emb(1, 5, 16))
    if kind == "qwenimage":
        vae = diffusers.AutoencoderKLQwenImage(base_dim=8, z_dim=4, dim_mult=[1, 2], num_res_blocks=1,
                                               temperal_downsample=[False], latents_mean=MEAN, latents_std=STD)
        transformer = diffusers.QwenImageTransformer2DModel(
            patch_size=2, in_channels=16, out_channels=4, num_layers=1, attention_head_dim=8, num_attention_heads=2,
            joint_attention_dim=16, axes_dims_rope=(2, 2, 4))
        pipe = diffusers.QwenImagePipeline(scheduler=flow(), vae=vae, text_encoder=None, tokenizer=None,
                                           transformer=transformer)
        return pipe, dict(prompt_embeds=emb(1, 5, 16), prompt_embeds_mask=torch.ones(1, 5, dtype=torch.long))
    if kind == "wan":
        vae = diffusers.AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 2], num_res_blocks=1, temperal_downsample=[True],
                                         latents_mean=MEAN, latents_std=STD, scale_factor_temporal=2, scale_factor_spatial=2)
        transformer = diffusers.WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, text_dim=16,
            freq_dim=16, ffn_dim=16, num_layers=1, rope_max_seq_len=32)
        pipe = diffusers.WanPipeline(tokenizer=None, text_encoder=None, vae=vae, scheduler=flow(shift=3.0),
                                     transformer=transformer)
        return pipe, dict(prompt_embeds=emb(1, 5, 16), negative_prompt_embeds=emb(1, 5, 16), num_frames=FRAMES)
    if kind == "chroma":
        transformer = diffusers.ChromaTransformer2DModel(
            patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=8, num_attention_heads=2,
            joint_attention_dim=16, axes_dims_rope=(2, 2, 4), approximator_num_channels=8, approximator_hidden_dim=16,
            approximator_layers=1)
        vae = tiny_vae(16, **(vae_config or dict(shift_factor=0.2, scaling_factor=0.5)))  # not FLUX.1's: fitted
        pipe = diffusers.ChromaPipeline(scheduler=flow(), vae=vae, text_encoder=None, tokenizer=None,
                                        transformer=transformer)
        return pipe, dict(prompt_embeds=emb(1, 5, 16), negative_prompt_embeds=emb(1, 5, 16),
                          prompt_attention_mask=torch.ones(1, 5), negative_prompt_attention_mask=torch.ones(1, 5))
    raise ValueError(f"no tiny pipeline {kind!r}; kinds: {SHIPPED_SPACE_KINDS + OTHER_KINDS}")


def run(pipe, kwargs, callback=None, steps=STEPS, output_type="np"):
    """The pipeline's output (images, or a video pipeline's frames) of a seeded SIZE x SIZE run; a PreviewCallback
    is passed with the tensor inputs it asks for."""
    extra = {} if callback is None else dict(callback_on_step_end=callback)
    if isinstance(callback, PreviewCallback):
        extra["callback_on_step_end_tensor_inputs"] = callback.tensor_inputs
    result = pipe(**kwargs, num_inference_steps=steps, height=SIZE, width=SIZE, output_type=output_type,
                  generator=torch.Generator().manual_seed(0), **extra)
    return result.frames if hasattr(result, "frames") else result.images


def latent_side(pipe):
    return SIZE // pipe.vae_scale_factor


def mid_grey_affine(channels):
    """An affine previewer whose output stays inside (0, 1) for unit-scale latents, so nothing clips."""
    previewer = affine(channels)
    torch.nn.init.normal_(previewer.body.weight, std=0.1 / channels**0.5)
    torch.nn.init.constant_(previewer.body.bias, 0.5)
    return previewer


def save_tiny_sd_folder(folder):
    """A complete tiny SD pipeline on disk, text encoder and a letters-only CLIP tokenizer included."""
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c], vocab[c + "</w>"] = len(vocab), len(vocab) + 1
    (folder / "tok").mkdir(parents=True)
    (folder / "tok" / "vocab.json").write_text(json.dumps(vocab))
    (folder / "tok" / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "tok" / "vocab.json"), str(folder / "tok" / "merges.txt"), model_max_length=8)
    torch.manual_seed(0)
    encoder = CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=16, num_hidden_layers=1,
                                           num_attention_heads=2, max_position_embeddings=8, bos_token_id=0, eos_token_id=1,
                                           pad_token_id=1))
    pipe = diffusers.StableDiffusionPipeline(vae=tiny_vae(4), text_encoder=encoder, tokenizer=tokenizer, unet=tiny_unet(),
                                             scheduler=sd_scheduler(), safety_checker=None, feature_extractor=None,
                                             requires_safety_checker=False)
    pipe.save_pretrained(folder / "pipe")
    return folder / "pipe"


def tiny_vae_folder(path):
    """A random 4-channel diffusers AutoencoderKL with scale factor 2, saved as a VAE folder."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(8, 16), latent_channels=4, norm_num_groups=4, layers_per_block=1,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
    vae.save_pretrained(path)
    return path


def write_images(folder, count=3, size=(80, 64)):
    """`count` PNGs of `size` (w, h): smooth colour gradients plus noise, something with structure at every scale."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        yy, xx = np.mgrid[0:size[1], 0:size[0]] / max(size)
        image = np.stack([xx, yy, (xx + yy) / 2], -1) * rng.uniform(0.5, 1.0, 3) + rng.normal(0, 0.05, (size[1], size[0], 3))
        Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(folder / f"img{i}.png")
    return folder


def fake_teacher(calls: list | None = None):
    """A training.teachers.Teacher with 4-channel latents at 1/8 resolution: pooled RGB plus luma; decodes the RGB
    part back up. `calls` collects the batch size of every decode."""
    from training.teachers import Teacher

    def encoder(images):
        pooled = F.avg_pool2d(images, 8)
        return torch.cat([pooled, pooled.mean(1, keepdim=True)], 1) * 2 - 1

    def decoder(latents):
        if calls is not None:
            calls.append(len(latents))
        return F.interpolate((latents[:, :3] + 1) / 2, scale_factor=8, mode="nearest")

    return Teacher("fake", 4, 8, {}, decoder, encoder, torch.device("cpu"))
