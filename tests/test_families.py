import pytest
import torch
import torch.nn.functional as F

from previewers import FAMILIES, build
from previewers.families import affine, conv, linear, mlp, quadratic, upsampler


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("channels", [4, 16, 32])
def test_shape_and_range(family, channels):
    p = build(family, channels)
    torch.nn.init.normal_(next(iter(p.body.parameters())), std=3.0)  # push outputs beyond [0, 1]
    y = p(torch.randn(2, channels, 6, 10))
    s = 8 if family == "upsampler" else 1
    assert y.shape == (2, 3, 6 * s, 10 * s)
    assert y.min() >= 0 and y.max() <= 1
    assert p.scale == s


def test_planted_linear_and_affine():
    w, b = torch.randn(3, 4) * 0.1, torch.tensor([0.5, 0.4, 0.6])
    x = torch.randn(1, 4, 5, 5)
    lin, aff = linear(4), affine(4)
    lin.body.weight.data = w[:, :, None, None]
    aff.body.weight.data, aff.body.bias.data = w[:, :, None, None], b
    expected = torch.einsum("oc,bchw->bohw", w, x)
    torch.testing.assert_close(lin(x), expected.clamp(0, 1))
    torch.testing.assert_close(aff(x), (expected + b[:, None, None]).clamp(0, 1))


def test_planted_quadratic_matches_explicit_polynomial():
    c = 4
    q = quadratic(c)
    assert sum(t.numel() for t in q.parameters()) == 3 * (1 + c + c * (c + 1) // 2) == 45
    g = torch.Generator().manual_seed(0)
    for t in q.body.parameters():
        t.data = torch.randn(t.shape, generator=g) * 0.05
    x = torch.randn(2, c, 3, 3, generator=g)
    rows, cols = torch.triu_indices(c, c)
    feats = x[:, rows] * x[:, cols]  # (B, C(C+1)/2, h, w): each product once
    expected = (
        q.body.bias[None, :, None, None]
        + torch.einsum("oc,bchw->bohw", q.body.weight, x)
        + torch.einsum("ok,bkhw->bohw", q.body.quad, feats)
    )
    torch.testing.assert_close(q.body(x), expected, rtol=1e-5, atol=1e-6)


def test_single_linear_conv_is_a_replicate_padded_kernel():
    p = conv(4, channels=(), kernels=(3,))
    k = torch.randn(3, 4, 3, 3) * 0.05
    p.body[0].weight.data, p.body[0].bias.data = k, torch.full((3,), 0.5)
    x = torch.randn(1, 4, 7, 7)
    expected = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k) + 0.5
    torch.testing.assert_close(p(x), expected.clamp(0, 1))


def test_input_normalisation_is_applied_first():
    p = affine(4)
    p.in_scale.copy_(torch.tensor([2.0, 1, 1, 1]))
    p.in_shift.copy_(torch.tensor([0.0, 0, 0, 1]))
    x = torch.randn(1, 4, 3, 3)
    ref = affine(4)
    ref.load_state_dict({k: v for k, v in p.state_dict().items() if k.startswith("body")}, strict=False)
    torch.testing.assert_close(p(x), ref(x * torch.tensor([2.0, 1, 1, 1])[:, None, None] + torch.tensor([0.0, 0, 0, 1])[:, None, None]))


def test_casts_input_to_own_dtype():
    p = mlp(4).to(torch.bfloat16)
    assert p(torch.randn(1, 4, 4, 4)).dtype == torch.bfloat16
    assert affine(4)(torch.randn(1, 4, 4, 4, dtype=torch.float16)).dtype == torch.float32


@pytest.mark.parametrize("bad", [torch.randn(1, 3, 8, 8), torch.randn(4, 8, 8), torch.randn(1, 1, 4, 8, 8)])
def test_wrong_shape_is_a_clear_error(bad):
    with pytest.raises(ValueError, match=r"expects latents of shape \(B, 4, h, w\), got"):
        affine(4)(bad)


def test_upsampler_scale_follows_stages():
    p = upsampler(16, width=8, depth=0, stages=(8, 8))
    assert p.scale == 4 and p(torch.randn(1, 16, 4, 4)).shape == (1, 3, 16, 16)


def test_build_rejects_unknown_family_and_bad_args():
    with pytest.raises(ValueError, match="unknown previewer family"):
        build("spline", 4)
    with pytest.raises(ValueError, match="bad arguments"):
        build("mlp", 4, depth=3)
    with pytest.raises(ValueError, match="len\\(kernels\\)"):
        conv(4, channels=(8,), kernels=(3,))
