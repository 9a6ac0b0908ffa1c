import numpy as np
import pytest
import torch
from skimage.color import lab2rgb

from previewers.metrics import ciede2000, psnr, ssim, ssim_differentiable


def test_identical_images_score_perfectly():
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.isinf(psnr(x, x)).all()
    assert ssim(x, x).tolist() == pytest.approx([1.0] * 3)
    assert ciede2000(x, x).tolist() == [0.0] * 3


def test_constant_offset_of_a_tenth_is_20_db():
    target = torch.full((2, 3, 16, 16), 0.5, dtype=torch.float64)
    assert psnr(target + 0.1, target).tolist() == pytest.approx([20.0, 20.0], abs=1e-9)


def test_results_are_per_image():
    gen = torch.Generator().manual_seed(1)
    target = torch.rand(2, 3, 32, 32, generator=gen)
    pred = target.clone()
    pred[1] = torch.rand(3, 32, 32, generator=gen)  # only the second image differs
    for metric, perfect in ((psnr, float("inf")), (ssim, 1.0), (ciede2000, 0.0)):
        values = metric(pred, target)
        assert values.shape == (2,)
        assert values[0].item() == pytest.approx(perfect)
        assert values[1].item() != pytest.approx(perfect)


def test_inputs_are_clamped_to_display_range():
    target = torch.zeros(1, 3, 8, 8)
    assert torch.isinf(psnr(target - 5, target)).all()  # everything below 0 shows as black


@pytest.mark.parametrize("size", [(32, 32), (8, 8), (5, 9), (3, 3)])
def test_ssim_fits_small_images(size):
    gen = torch.Generator().manual_seed(2)
    a, b = torch.rand(2, 1, 3, *size, generator=gen)
    value = ssim(a, b).item()
    assert -1 <= value < 1
    assert ssim(a, a).item() == pytest.approx(1.0)


def test_the_differentiable_ssim_is_scikit_images_and_has_gradients():
    gen = torch.Generator().manual_seed(3)
    target = torch.rand(2, 3, 24, 20, generator=gen, dtype=torch.float64)
    pred = (target + 0.2 * torch.randn(target.shape, generator=gen, dtype=torch.float64)).clamp(0, 1)
    pred.requires_grad_(True)
    value = ssim_differentiable(pred, target)
    torch.testing.assert_close(value.detach(), ssim(pred, target), rtol=0, atol=1e-9)
    value.sum().backward()
    assert pred.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="at least 7x7"):
        ssim_differentiable(torch.rand(1, 3, 6, 16), torch.rand(1, 3, 6, 16))


def test_ssim_rejects_images_below_3_pixels():
    with pytest.raises(ValueError, match="3x3"):
        ssim(torch.rand(1, 3, 2, 8), torch.rand(1, 3, 2, 8))


# Sharma, Wu & Dalal (2005), "The CIEDE2000 color-difference formula", table 1: the pairs whose
# colours lie inside the sRGB gamut (so they survive the RGB input of `ciede2000`).
@pytest.mark.parametrize("lab1, lab2, expected", [
    ((50.0, 0.0, 0.0), (50.0, -1.0, 2.0), 2.3669),  # pair 7
    ((50.0, 2.5, 0.0), (73.0, 25.0, -18.0), 27.1492),  # pair 17
    ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),  # pair 25
    ((22.7233, 20.0904, -46.6940), (23.0331, 14.9730, -42.5619), 2.0373),  # pair 29
])
def test_ciede2000_matches_sharma_table(lab1, lab2, expected):
    def image(lab):  # a 4x4 patch of one colour, (1, 3, 4, 4) sRGB
        rgb = lab2rgb(np.array(lab, dtype=np.float64)[None, None])
        return torch.from_numpy(rgb).permute(2, 0, 1)[None].expand(1, 3, 4, 4)

    assert ciede2000(image(lab1), image(lab2)).item() == pytest.approx(expected, abs=1e-4)
    assert ciede2000(image(lab2), image(lab1)).item() == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("metric", [psnr, ssim, ciede2000])
def test_bad_shapes_are_rejected(metric):
    with pytest.raises(ValueError, match="same shape"):
        metric(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 9))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        metric(torch.rand(1, 4, 8, 8), torch.rand(1, 4, 8, 8))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        metric(torch.rand(3, 8, 8), torch.rand(3, 8, 8))
