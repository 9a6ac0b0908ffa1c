"""Latent conventions: every step-latent layout unpacks as the pipelines' own code does."""

import pytest
import torch

from previewers.pipelines.conventions import Convention
from previewers.pipelines.latents import PipelineLatents, unpack_tokens

diffusers = pytest.importorskip("diffusers")


def latent_size(height, width, factor):
    return 2 * (height // (factor * 2)), 2 * (width // (factor * 2))  # as the FLUX pipelines round it


@pytest.mark.parametrize("height, width, factor", [(64, 48, 8), (1024, 768, 8), (40, 24, 2), (70, 50, 8)])
def test_flux1_unpack_matches_pipeline(height, width, factor):
    h, w = latent_size(height, width, factor)
    tokens = torch.randn(2, (h // 2) * (w // 2), 64)
    expected = diffusers.FluxPipeline._unpack_latents(tokens, height, width, factor)
    assert torch.equal(unpack_tokens(tokens, 16, height, width, factor), expected)


@pytest.mark.parametrize("height, width, factor", [(64, 48, 8), (48, 80, 8), (40, 24, 2)])
def test_flux2_unpack_and_unpatchify_match_pipeline(height, width, factor):
    pipe = diffusers.Flux2Pipeline
    h, w = latent_size(height, width, factor)
    spatial = torch.randn(2, 32, h, w)  # the unpatchified 32-channel latent previewers take
    patched = pipe._patchify_latents(spatial)  # (B, 128, h/2, w/2), channel 4c + 2dy + dx
    tokens = pipe._pack_latents(patched)  # (B, (h/2)(w/2), 128), as the transformer holds them
    ids = pipe._prepare_latent_ids(patched)
    expected = pipe._unpatchify_latents(pipe._unpack_latents_with_ids(tokens, ids))
    assert torch.equal(expected, spatial)
    assert torch.equal(unpack_tokens(tokens, 32, height, width, factor), expected)
    # the same latents handed over patchified (B, 4C, h/2, w/2) give the same frames
    frames = PipelineLatents(Convention("vae", "test", 32, factor)).frames(patched)
    assert torch.equal(frames[:, 0], spatial)


@pytest.mark.parametrize("frames, patch, temporal_patch", [(3, 1, 1), (4, 2, 1), (4, 2, 2)])
def test_ltx_video_tokens_match_pipeline(frames, patch, temporal_patch):
    """LTX-Video packs (B, C, F, H, W) into (B, F'·H'·W', C·pt·p·p) tokens."""
    c, h, w, factor = 8, 4, 6, 32
    video = torch.randn(2, c, frames, h, w)
    tokens = diffusers.LTXPipeline._pack_latents(video, patch, temporal_patch)
    convention = Convention("vae", "test", c, factor, temporal=8, token_patch=(temporal_patch, patch))
    out = PipelineLatents(convention, height=h * factor, width=w * factor).frames(tokens)
    assert torch.equal(out, video.transpose(1, 2))  # (B, T, C, h, w)


def test_video_layouts_are_read_from_the_shape():
    latents = PipelineLatents(Convention("vae", "test", 4, 8))
    x = torch.randn(1, 4, 3, 5, 6)  # (B, C, T, h, w): Wan, AnimateDiff
    assert torch.equal(latents.frames(x), x.transpose(1, 2))
    assert torch.equal(latents.frames(x.transpose(1, 2)), x.transpose(1, 2))  # (B, T, C, h, w): CogVideoX, SVD
    assert torch.equal(latents.frames(x.permute(0, 2, 3, 4, 1)), x.transpose(1, 2))  # channels last: Kandinsky 5
    conditioned = torch.cat([x.permute(0, 2, 3, 4, 1), torch.randn(1, 3, 5, 6, 5)], -1)  # + image condition and mask
    assert torch.equal(latents.frames(conditioned), x.transpose(1, 2))  # Kandinsky 5 I2V
    with pytest.raises(ValueError, match=r"do not hold 4-channel latents in any known layout"):
        latents.frames(torch.randn(1, 7, 3, 5, 6))


def test_channel_order_is_4c_plus_2dy_plus_dx():
    tokens = torch.arange(8.0).reshape(1, 1, 8)  # one token, C = 2
    out = unpack_tokens(tokens, 2, 16, 16, 8)  # a 2x2 latent
    assert out.tolist() == [[[[0, 1], [2, 3]], [[4, 5], [6, 7]]]]


def test_wrong_size_is_a_clear_error():
    with pytest.raises(ValueError, match="16 tokens do not tile a 64x48 image"):
        unpack_tokens(torch.randn(1, 16, 64), 16, 64, 48, 8)
    with pytest.raises(ValueError, match="tokens of 60 features are not 16-channel latents"):
        unpack_tokens(torch.randn(1, 4, 60), 16, 64, 64, 8)
