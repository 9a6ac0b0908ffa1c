"""How long the fit on first use takes for a full-size SD-class VAE (issue 9's note).

    python -m benchmarks.first_use --device cpu      # prints the timing; --out FILE also writes it as markdown

Builds diffusers' AutoencoderKL with the SD 1.5 config and random weights (benchmarks/reference.py:
the cost of encode and decode does not depend on the weight values) and runs the whole fit that
`previewer="auto"` runs for a VAE without a shipped previewer (previewers/first_use/fit.py): encode and
decode the example crops, least squares for affine and the 3x3 conv, held-out scoring. Its PSNR is
meaningless (random weights); the seconds are the point.
"""

import argparse
import sys
import time

import diffusers
import torch

from benchmarks.reference import SD15_VAE
from benchmarks.timing import machine
from previewers.first_use.fit import fit_for_vae
from previewers.pipelines.latents import bind_vae
from training.adam import resolve_device


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="'auto' (CUDA when available), 'cpu', 'cuda', ...")
    parser.add_argument("--out", help="also write the result to this markdown file")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(**SD15_VAE).to(device).eval().requires_grad_(False)
    latents = bind_vae(vae)
    start = time.perf_counter()
    previewer = fit_for_vae(latents)
    seconds = time.perf_counter() - start
    recipe = previewer.meta["recipe"]
    line = (f"first-use fit, SD 1.5 AutoencoderKL (random weights), {recipe['data']} + held-out crops, "
            f"on {machine(device, torch.float32)}: {seconds:.1f} s (kept {recipe['family']})")
    print(line)
    if args.out:
        with open(args.out, "w") as f:
            f.write(f"# First-use fit time\n\n`python -m benchmarks.first_use --device {args.device}`\n\n{line}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
