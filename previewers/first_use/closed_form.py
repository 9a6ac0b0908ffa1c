"""Closed-form fits: families whose output is linear in their parameters, by ridge least squares.

Torch-only (tqdm for progress, imported when a fit runs), so that both the fitting package and the
callback's fit-on-first-use can use it: `previewers` never imports `training`.

`linear`, `affine`, `quadratic` and the one-layer `conv` (channels=(), kernels=(k,)) all compute
RGB = features(normalised latent) · W for a fixed feature map, so the best W in (weighted) squared
error is the solution of the normal equations (XᵀX + λI) W = Xᵀy. XᵀX and Xᵀy are accumulated in float64
over chunks of samples, so memory stays small whatever the data size; the solve takes milliseconds.
Features are taken from the previewer's own normalisation (set before fitting), which keeps the
system well conditioned; the bias feature is not penalised.

`linear` follows the published tables' no-bias convention (ComfyUI, AUTOMATIC1111): the display is
(x·factors + 1)/2, i.e. 0.5 + W·x in [0, 1], so its factors drop into those tools unchanged. W is
fitted to target − 0.5, and the constant 0.5 is carried by the input shift: in_shift is set to
the minimum-norm s with W·s = 0.5 (W is 3×C with C ≥ 3, so one exists).
"""

import torch
import torch.nn.functional as F

PER_PIXEL = ("linear", "affine", "quadratic")
MIN_MSE = 1e-5  # weights stop growing past 50 dB, so near-perfect samples cannot take over


def hidden_by_clamp(out: torch.Tensor, clamped_target: torch.Tensor) -> torch.Tensor:
    """Where the display clamp hides the error: the target sits on a bound of [0, 1] and the unclamped
    output is already beyond it (bool, same shape)."""
    return ((out > 1) & (clamped_target >= 1)) | ((out < 0) & (clamped_target <= 0))


class OneProcess:
    """The default `world` of the fits below: all chunks here, sums as they are. A data-parallel fit
    passes its own (training/distributed.World: rank, size, sum over processes)."""

    rank, size = 0, 1

    @staticmethod
    def sum(tensor: torch.Tensor) -> torch.Tensor:
        return tensor


def chunk_starts(n: int, per_chunk: int, world) -> range:
    """First sample of each chunk this process handles: chunk i goes to rank i mod world.size."""
    return range(world.rank * per_chunk, n, world.size * per_chunk)


def set_normalisation(previewer, latents, world=OneProcess, chunk: int = 256) -> None:
    """in_scale/in_shift from per-channel latent statistics, so the body sees ≈ zero-mean unit-variance
    inputs. `linear` has no bias to absorb a shift, so it only gets a scale (1 / RMS); its shift is
    left to the closed-form fit (the display offset, see fit_closed_form).

    latents: (N, C, h, w), a tensor or anything sliced like one (streamed pairs); the moments are
    float64 sums over chunks of `chunk` samples, added over `world`'s processes."""
    n, c = latents.shape[:2]
    moments = torch.zeros(3, c, dtype=torch.float64)  # count, Σx, Σx² per channel
    for a in chunk_starts(n, chunk, world):
        x = latents[a:a + chunk].transpose(0, 1).reshape(c, -1).double()  # (C, chunk·h·w)
        moments += torch.stack([torch.full((c,), float(x.shape[1]), dtype=x.dtype), x.sum(1), x.square().sum(1)])
    count, total, squares = world.sum(moments)
    if previewer.family == "linear":
        scale, shift = 1 / (squares / count).sqrt(), torch.zeros(c, dtype=torch.float64)
    else:
        mean = total / count
        std = ((squares - count * mean.square()).clamp(min=0) / (count - 1)).sqrt()
        scale, shift = 1 / std, -mean / std
    previewer.in_scale.copy_(scale.clamp(max=1e6))
    previewer.in_shift.copy_(shift)


def is_closed_form(family: str, args: dict) -> bool:
    return family in PER_PIXEL or (family == "conv" and not args.get("channels") and len(args.get("kernels", ())) == 1)


def features(previewer, x: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) normalised latents → (B·h·w, F) float64 design rows, the bias feature (1) last."""
    b, c, h, w = x.shape
    x = x.double()
    ones = x.new_ones(b * h * w, 1)
    if previewer.family == "conv":
        k = previewer.args["kernels"][0]
        # same replicate padding as the conv: border pixels see the same neighbours as in the previewer
        patches = F.unfold(F.pad(x, (k // 2,) * 4, mode="replicate"), k)  # (B, C·k·k, h·w), index c·k² + dy·k + dx
        return torch.cat([patches.transpose(1, 2).reshape(-1, c * k * k), ones], 1)
    pixels = x.permute(0, 2, 3, 1).reshape(-1, c)
    if previewer.family == "linear":
        return pixels
    if previewer.family == "affine":
        return torch.cat([pixels, ones], 1)
    rows, cols = torch.triu_indices(c, c)  # the order of Quadratic.quad
    return torch.cat([pixels, pixels[:, rows] * pixels[:, cols], ones], 1)


def set_solution(previewer, solution: torch.Tensor) -> None:
    """Write the (F, 3) solution of `features`' rows into the previewer's parameters."""
    body, c = previewer.body, previewer.latent_channels
    w = solution.T.to(previewer.in_scale.dtype)  # (3, F)
    with torch.no_grad():
        if previewer.family == "linear":
            body.weight.copy_(w.view_as(body.weight))
        elif previewer.family == "affine":
            body.weight.copy_(w[:, :c].reshape(body.weight.shape))
            body.bias.copy_(w[:, c])
        elif previewer.family == "quadratic":
            body.weight.copy_(w[:, :c])
            body.quad.copy_(w[:, c:-1])
            body.bias.copy_(w[:, -1])
        else:
            layer = body[0]
            layer.weight.copy_(w[:, :-1].reshape(layer.weight.shape))
            layer.bias.copy_(w[:, -1])


def fit_closed_form(previewer, latents: torch.Tensor, targets: torch.Tensor, ridge: float = 1e-5, reweight: int = 3,
                    chunk_rows: int = 1 << 16, progress: bool = True, world=OneProcess):
    """Fit `previewer` (normalisation already set) mapping latents (N, C, h, w) to targets
    (N, 3, h, w, unclamped), in place; ridge λ = ridge · mean diagonal of XᵀX. Returns the previewer.
    latents and targets may be anything sliced like tensors (streamed pairs). With a data-parallel
    `world` each process accumulates XᵀX and Xᵀy over its own chunks and one all-reduce per round
    sums them, so every process solves the same system a single process would, up to float64 rounding.

    Round 0 is plain least squares on the unclamped targets. It minimises the total squared error
    of the unclamped output, while what is judged is the mean PSNR per image of the clamped output,
    i.e. Σ_i log MSE_i with MSE_i measured after the display clamp. Each of the `reweight` further
    rounds solves a weighted least-squares surrogate of that built from the previous solution
    (iteratively reweighted least squares, in the manner of majorise-minimise):
    - targets are clamped to [0, 1], and where the target sits on a bound and the previous output
      is already beyond it (the clamp hides the difference) the target becomes that output, so
      clipped pixels stop pulling the fit; the squared error against these targets bounds the
      display error from above and equals it at the previous output, up to overshoots;
    - sample i gets weight 1 / S_i, its error against these targets at the previous output: the
      tangent of log at S_i, so minimising Σ S_i(W) / S_i bounds Σ log S_i(W) from above.
    What it gains over plain least squares: benchmarks/README.md, "First use and day-one nets".
    """
    from tqdm import tqdm

    if not is_closed_form(previewer.family, previewer.args):
        raise ValueError(f"{previewer.family} {previewer.args} has no closed-form fit")
    if previewer.family == "linear" and previewer.latent_channels < 3:
        raise ValueError("linear needs at least 3 latent channels to carry the display offset 0.5")
    offset = 0.5 if previewer.family == "linear" else 0.0
    n, _, h, w = latents.shape
    per_chunk = max(1, chunk_rows // (h * w))
    starts = chunk_starts(n, per_chunk, world)
    n_features = features(previewer, previewer.normalise(latents[0:1].float())).shape[1]
    solution = None  # (F, 3) float64: display = features · solution + offset
    bar = tqdm(total=(1 + reweight) * len(starts), desc=f"least squares {previewer.family}", unit="chunk",
               disable=not progress)
    with torch.no_grad():
        for _ in range(1 + reweight):
            system = torch.zeros(n_features, n_features + 3, dtype=torch.float64)  # [XᵀX | Xᵀy]
            for a in starts:
                x = features(previewer, previewer.normalise(latents[a:a + per_chunk].float()))
                y = targets[a:a + per_chunk].double().permute(0, 2, 3, 1).reshape(-1, 3)
                if solution is not None:
                    y, weight = surrogate(x @ solution + offset, y, h * w)
                    x_weighted = x * weight[:, None]
                else:
                    x_weighted = x
                system += x_weighted.T @ torch.cat([x, y - offset], 1)
                bar.update()
            system = world.sum(system)
            gram, rhs = system[:, :n_features], system[:, n_features:]
            penalty = torch.full((gram.shape[0],), ridge * gram.diagonal().mean().item(), dtype=gram.dtype)
            if previewer.family != "linear":
                penalty[-1] = 0  # the bias is never shrunk
            solution = torch.linalg.solve(gram + torch.diag(penalty), rhs)
        bar.close()
        set_solution(previewer, solution)
        if offset:
            weight = previewer.body.weight.double()[:, :, 0, 0]  # (3, C)
            previewer.in_shift.copy_(torch.linalg.pinv(weight) @ weight.new_full((3,), offset))
    return previewer


def surrogate(output: torch.Tensor, target: torch.Tensor, pixels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets and per-row weights of one reweighting round, from the previous output.

    output, target: (S·pixels, 3) rows of S whole samples. Returns the clamp-aware targets
    (S·pixels, 3) and the weights (S·pixels,), one per sample repeated over its rows.
    """
    t = target.clamp(0, 1)
    t = torch.where(hidden_by_clamp(output, t), output, t)
    # the weight is 1 / the surrogate's own error at the previous output (the tangent point of log):
    # weighting by the display error instead would favour samples whose large errors the clamp
    # happens to hide, and the fit gets worse round after round
    mse = (output - t).square().view(-1, pixels * 3).mean(1)
    return t, (1 / mse.clamp(min=MIN_MSE)).repeat_interleave(pixels)
