import pytest
import torch
import torch.nn.functional as F

from previewers import FAMILIES, build
from previewers.models.families import affine, conv, linear, mlp, quadratic, upsampler


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


def first_design_reference(body_state: dict, width: int, depth: int, stages: list[int], channels: int) -> torch.nn.Module:
    """The upsampler as the first design built it (nearest 2x + 3x3 conv stages, zero padding), written out
    independently of families.py, so a change there cannot change what its shipped files compute."""
    layers = [torch.nn.Conv2d(channels, width, 3, padding=1), torch.nn.ReLU()]
    for _ in range(depth):
        layers += [torch.nn.Conv2d(width, width, 3, padding=1), torch.nn.ReLU()]
    n_in = width
    for n_out in stages:
        layers += [torch.nn.Upsample(scale_factor=2, mode="nearest"), torch.nn.Conv2d(n_in, n_out, 3, padding=1),
                   torch.nn.ReLU()]
        n_in = n_out
    layers.append(torch.nn.Conv2d(n_in, 3, 3, padding=1))
    net = torch.nn.Sequential(*layers)
    net.load_state_dict(body_state)
    return net


@pytest.mark.parametrize("channels", [4, 32])
def test_first_design_upsampler_files_load_and_compute_as_before(channels, tmp_path):
    """Files of the first design (args without "upsample", as shipped until round 5) still load and compute it."""
    import previewers

    made = upsampler(channels, width=48, depth=1, stages=(32, 16, 8))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in made.state_dict().values():
            t.copy_(torch.randn(t.shape, generator=g) * 0.1)  # normalisation buffers too: not the identity
    p = previewers.load(previewers.save(made, tmp_path / "first.safetensors"))
    assert p.args == {"width": 48, "depth": 1, "stages": [32, 16, 8]}
    body = {k.removeprefix("body."): v for k, v in p.state_dict().items() if k.startswith("body.")}
    reference = first_design_reference(body, p.args["width"], p.args["depth"], p.args["stages"], p.latent_channels)
    x = torch.randn(2, p.latent_channels, 6, 5, generator=g)
    with torch.no_grad():
        expected = reference(x * p.in_scale.view(-1, 1, 1) + p.in_shift.view(-1, 1, 1)).clamp(0, 1)
        torch.testing.assert_close(p(x), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("stages,scale", [((16, 8, 8), 8), ((16, 8), 4)])
def test_shuffle_upsampler_shapes_scale_and_cost(stages, scale):
    from benchmarks.speed import count_macs, run_model

    p = upsampler(16, width=32, depth=2, stages=stages, upsample="shuffle", base=3)
    y = p(torch.randn(2, 16, 6, 10))
    assert p.scale == scale and y.shape == (2, 3, 6 * scale, 10 * scale) and 0 <= y.min() and y.max() <= 1
    assert p.args == {"width": 32, "depth": 2, "stages": list(stages), "upsample": "shuffle", "base": 3}
    # MACs per latent pixel: trunk (first conv, two blocks of two convs) and linear base at latent resolution,
    # then each stage's conv at the resolution before its pixel shuffle, and the final conv at output resolution
    if scale == 4:  # two stages: 32 → 4·16 at 1x, 16 → 4·8 at 2x
        per_latent_pixel = 16 * 32 * 9 + 4 * 32 * 32 * 9 + 3 * 16 * 9 + 32 * 64 * 9 + 4 * 16 * 32 * 9 + 16 * 8 * 3 * 9
    else:  # three: 32 → 4·16 at 1x, 16 → 4·8 at 2x, 8 → 4·8 at 4x
        per_latent_pixel = (16 * 32 * 9 + 4 * 32 * 32 * 9 + 3 * 16 * 9 + 32 * 64 * 9 + 4 * 16 * 32 * 9
                            + 16 * 8 * 32 * 9 + 64 * 8 * 3 * 9)
    assert count_macs(run_model, p, torch.randn(1, 16, 64, 64)) == pytest.approx(per_latent_pixel * 64 * 64, rel=0.02)


def test_shuffle_upsampler_with_a_zero_net_is_its_upscaled_linear_base():
    p = upsampler(4, width=8, depth=1, stages=(8, 8, 8), upsample="shuffle", base=3)
    torch.nn.init.zeros_(p.body.net[-1].weight)
    torch.nn.init.zeros_(p.body.net[-1].bias)
    p.in_scale.fill_(2.0)
    p.in_shift.fill_(0.1)
    x = torch.randn(1, 4, 5, 7)
    with torch.no_grad():
        small = p.body.base(x * 2.0 + 0.1)
        expected = F.interpolate(small, scale_factor=8, mode="bilinear", align_corners=False).clamp(0, 1)
        torch.testing.assert_close(p(x), expected, atol=1e-5, rtol=0)


def test_upsampler_rejects_bad_design_args():
    with pytest.raises(ValueError, match="upsample must be one of"):
        build("upsampler", 4, upsample="bicubic")
    with pytest.raises(ValueError, match="needs upsample='shuffle'"):
        build("upsampler", 4, base=3)
    with pytest.raises(ValueError, match="one count .* per stage"):
        build("upsampler", 4, stages=[8, 8], upsample="shuffle", refine=[1])
    with pytest.raises(ValueError, match="refine needs upsample='shuffle'"):
        build("upsampler", 4, stages=[8, 8], refine=[1, 0])


def test_refine_adds_convs_at_the_stage_resolution_and_round_trips(tmp_path):
    import previewers
    from benchmarks.speed import count_macs, run_model

    plain = upsampler(4, width=8, depth=1, stages=(8, 4), upsample="shuffle", activation="leaky")
    refined = upsampler(4, width=8, depth=1, stages=(8, 4), upsample="shuffle", activation="leaky", refine=(0, 2))
    assert "refine" not in plain.args and refined.args["refine"] == [0, 2]  # earlier files' args stay as they were
    x = torch.randn(1, 4, 16, 16)
    # two 4→4 3x3 convs at the second stage's output, 4x the latent side
    extra = 2 * 4 * 4 * 9 * (16 * 4) ** 2
    assert count_macs(run_model, refined, x) - count_macs(run_model, plain, x) == pytest.approx(extra, rel=0.02)
    loaded = previewers.load(previewers.save(refined, tmp_path / "refined.safetensors"))
    assert loaded.args == refined.args
    torch.testing.assert_close(loaded(x), refined(x), atol=0, rtol=0)


def test_dilated_conv_reaches_as_far_as_its_dilation_and_folds_the_normalisation():
    # channels (8,), kernels (3, 1), dilation 2 on the 3x3: the output at a pixel depends on inputs 2 pixels away
    # along each axis and not on those 1 away (the net's receptive field at the same cost as an undilated 3x3)
    p = conv(4, channels=(8,), kernels=(3, 1), dilations=(2, 1))
    assert p.args["dilations"] == [2, 1]
    x = torch.randn(1, 4, 9, 9, requires_grad=True)
    p.body(x)[0, :, 4, 4].sum().backward()
    reach = x.grad.abs().sum(1)[0] > 0
    assert reach[4, 2] and reach[4, 6] and reach[2, 2] and reach[6, 6]
    assert not reach[4, 3] and not reach[4, 5] and not reach[3, 4]
    p.in_scale.copy_(torch.tensor([2.0, 0.5, 1, 1]))
    p.in_shift.copy_(torch.tensor([0.1, 0, -0.2, 1]))
    z = torch.randn(1, 4, 9, 9)
    normalised = z * p.in_scale.view(1, -1, 1, 1) + p.in_shift.view(1, -1, 1, 1)
    torch.testing.assert_close(p(z), p.body(normalised).clamp(0, 1))
    assert "dilations" not in conv(4, channels=(8,), kernels=(3, 1)).args  # earlier files' args stay as they were


@pytest.mark.parametrize("args", [dict(channels=(8,), kernels=(3, 1), dilations=(2,)),
                                  dict(channels=(), kernels=(3,), dilations=(2,)),
                                  dict(channels=(8,), kernels=(3, 1), dilations=(0, 1))])
def test_bad_dilations_are_a_clear_error(args):
    with pytest.raises(ValueError, match="dilations"):
        conv(4, **args)
