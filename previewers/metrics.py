"""Image quality metrics for previews: PSNR, SSIM and mean CIEDE2000, one value per image.

All take `pred` and `target` as float tensors (B, 3, H, W) with RGB in [0, 1] (values outside
are clamped first, as a display would) and return a float64 tensor (B,), so callers can average
over images or report per image. Identical images give PSNR inf, SSIM 1 and ΔE 0.

PSNR needs only torch: the fit on first use (runtime install) scores with it. SSIM and CIEDE2000 import
scikit-image (the train extra) when called.
"""

import numpy as np
import torch
import torch.nn.functional as F

# SSIM window: scikit-image's default 7x7 uniform window (with its sample-covariance
# normalisation) fits latent-resolution previews (32x32 for a 256x256 crop); smaller images use
# the largest odd window that fits, down to 3x3.
SSIM_WINDOW = 7


def _images(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked, clamped float64 CPU copies of a (B, 3, H, W) pair."""
    if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise ValueError(f"metrics take torch tensors, got {type(pred).__name__} and {type(target).__name__}")
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    if pred.ndim != 4 or pred.shape[1] != 3:
        raise ValueError(f"metrics take RGB batches of shape (B, 3, H, W), got {tuple(pred.shape)}")
    return (pred.detach().to("cpu", torch.float64).clamp(0, 1),
            target.detach().to("cpu", torch.float64).clamp(0, 1))


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB with data range 1: 10·log10(1 / MSE) per image."""
    pred, target = _images(pred, target)
    return psnr_from_mse((pred - target).square().mean(dim=(1, 2, 3)))


def psnr_from_mse(mse: torch.Tensor | float, floor: float = 0.0) -> torch.Tensor:
    """10·log10(1 / MSE) in dB (data range 1), elementwise in float64, of a tensor or float mean squared error.
    An MSE below `floor` counts as `floor` (a figure recorded in JSON stays finite for an exact fit); MSE 0 with no
    floor gives inf, MSE inf (nothing to score) −inf."""
    return 10 * torch.log10(1 / torch.as_tensor(mse, dtype=torch.float64).clamp(min=floor))


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean structural similarity per image (scikit-image, data range 1, channels averaged)."""
    from skimage.metrics import structural_similarity

    pred, target = _images(pred, target)
    side = min(pred.shape[-2:])
    if side < 3:
        raise ValueError(f"SSIM needs images of at least 3x3 pixels, got {tuple(pred.shape[-2:])}")
    window = min(SSIM_WINDOW, side if side % 2 else side - 1)
    return torch.tensor([
        structural_similarity(p, t, channel_axis=0, data_range=1.0, win_size=window)
        for p, t in zip(pred.numpy(), target.numpy())
    ], dtype=torch.float64)


def ssim_differentiable(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """ssim() as a differentiable torch function, for training losses: the same 7x7 uniform window, sample
    covariance and constants as scikit-image's, on the windows that lie wholly inside the image (scikit-image crops
    the others before averaging). No clamping: callers clamp as they need. (B, 3, H, W) of at least 7x7 → (B,)."""
    if min(pred.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"the SSIM loss needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got "
                         f"{tuple(pred.shape[-2:])}; use larger crops")
    n = SSIM_WINDOW * SSIM_WINDOW
    c1, c2 = 0.01 ** 2, 0.03 ** 2  # data range 1

    def mean(x):
        return F.avg_pool2d(x, SSIM_WINDOW, stride=1)

    mu_p, mu_t = mean(pred), mean(target)
    covariance = n / (n - 1)
    var_p = covariance * (mean(pred * pred) - mu_p * mu_p)
    var_t = covariance * (mean(target * target) - mu_t * mu_t)
    cov = covariance * (mean(pred * target) - mu_p * mu_t)
    s = ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / ((mu_p * mu_p + mu_t * mu_t + c1) * (var_p + var_t + c2))
    return s.mean(dim=(1, 2, 3))


def ciede2000(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean CIEDE2000 colour difference per image, RGB read as sRGB (D65) and converted to CIELAB."""
    from skimage.color import deltaE_ciede2000, rgb2lab

    pred, target = _images(pred, target)
    lab_pred = rgb2lab(pred.numpy(), channel_axis=1)
    lab_target = rgb2lab(target.numpy(), channel_axis=1)
    delta = deltaE_ciede2000(lab_pred, lab_target, channel_axis=1)  # (B, H, W)
    return torch.from_numpy(np.ascontiguousarray(delta.mean(axis=(1, 2))))
