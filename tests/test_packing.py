import pytest
import torch

from previewers.packing import latent_size, unpack_tokens

diffusers = pytest.importorskip("diffusers")


@pytest.mark.parametrize("height, width, factor", [(64, 48, 8), (1024, 768, 8), (40, 24, 2), (70, 50, 8)])
def test_flux1_unpack_matches_pipeline(height, width, factor):
    h, w = latent_size(height, width, factor)
    tokens = torch.randn(2, (h // 2) * (w // 2), 64)
    expected = diffusers.FluxPipeline._unpack_latents(tokens, height, width, factor)
    assert torch.equal(unpack_tokens(tokens, height, width, factor), expected)


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
    assert torch.equal(unpack_tokens(tokens, height, width, factor), expected)


def test_channel_order_is_4c_plus_2dy_plus_dx():
    tokens = torch.arange(8.0).reshape(1, 1, 8)  # one token, C = 2
    out = unpack_tokens(tokens, 16, 16, 8)  # a 2x2 latent
    assert out.tolist() == [[[[0, 1], [2, 3]], [[4, 5], [6, 7]]]]


def test_wrong_size_is_a_clear_error():
    with pytest.raises(ValueError, match="16 tokens do not tile a 64x48 image"):
        unpack_tokens(torch.randn(1, 16, 64), 64, 48, 8)
    with pytest.raises(ValueError, match=r"packed tokens \(B, N, 4·C\)"):
        unpack_tokens(torch.randn(1, 4, 8, 8), 64, 64, 8)
