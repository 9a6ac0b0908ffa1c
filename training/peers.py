"""Other people's previewers from the shared folder's models/peers, for side-by-side benchmarks only.

Never copied into the project: each loader reads the peer's own file from the shared folder.
Every peer is wrapped to the previewer contract: it takes OUR denoiser latents (B, C, h, w)
and returns RGB (B, 3, h·scale, w·scale) in [0, 1], with attributes `latent_channels`, `scale`
and `meta` {"peer", "license", "source"}. Conventions (checked against the teachers):

- birchlabs decoder_sd1.x: per-pixel MLP 4→12→12→3 (SiLU) on channels-last denoiser latents,
  output in [-1, 1] at latent resolution.
- vaeapprox (AUTOMATIC1111 "Approx NN"): 8 unpadded convs after a nearest 2x upsample and an
  11-pixel zero pad, leaky ReLU (0.1) after each; takes denoiser latents, output [-1, 1] at 2x.
- vaelight VAEpreview.onnx: takes the unscaled SD latent (denoiser latent / scaling factor) and
  returns four images at 1x, 2x, 4x and 8x the latent size; only the first ("output", at latent
  resolution: 64x64 for a 512x512 image) looks like the picture, the others score far below it against the
  teacher. Output in [-1, 1]. Runs in onnxruntime on the CPU.
"""

from functools import partial
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from previewers.models.spaces import SPACES
from training.shared_folder import SHARED

PEERS_DIR = SHARED / "models" / "peers"


def peer_file(relative: str, root: Path | None = None) -> Path:
    """Path of a peer's file under `root` (default PEERS_DIR), with a clear error."""
    root = PEERS_DIR if root is None else Path(root)
    path = root / relative
    if not path.is_file():
        raise FileNotFoundError(f"peer file {path} not found (peers live in {PEERS_DIR}: ../shared/models/peers beside "
                                "the checkout, or $LATENT_PREVIEW_SHARED/models/peers)")
    return path


class Peer(nn.Module):
    """Shape check, own-dtype cast, the wrapped network, then the [-1, 1] → [0, 1] display map."""

    def __init__(self, net: nn.Module, latent_channels: int, scale: int, meta: dict):
        super().__init__()
        self.net = net
        self.latent_channels = latent_channels
        self.scale = scale
        self.meta = meta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.latent_channels:
            raise ValueError(f"peer {self.meta['peer']} expects latents of shape (B, {self.latent_channels}, h, w), "
                             f"got {tuple(x.shape)}")
        return ((self.net(x.float()) + 1) / 2).clamp(0, 1)


class ChannelsLastMLP(nn.Module):
    """birchlabs' per-pixel MLP; state-dict keys in_proj, hidden_layers.N, out_proj."""

    def __init__(self, channels: int = 4, hidden: int = 12, layers: int = 1):
        super().__init__()
        self.in_proj = nn.Linear(channels, hidden)
        self.hidden_layers = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers))
        self.out_proj = nn.Linear(hidden, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.silu(self.in_proj(x.movedim(1, -1)))  # (B, h, w, hidden)
        for layer in self.hidden_layers:
            x = F.silu(layer(x))
        return self.out_proj(x).movedim(-1, 1)


class ApproxNN(nn.Module):
    """AUTOMATIC1111's VAEApprox; state-dict keys conv1..conv8."""

    def __init__(self, channels: int):
        super().__init__()
        widths = (channels, 8, 16, 32, 64, 32, 16, 8, 3)
        kernels = (7, 5, 3, 3, 3, 3, 3, 3)
        for i, k in enumerate(kernels):
            self.add_module(f"conv{i + 1}", nn.Conv2d(widths[i], widths[i + 1], k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = F.pad(x, (11, 11, 11, 11))  # the 8 convs shrink by 22 pixels: output is exactly 2x
        for conv in self.children():
            x = F.leaky_relu(conv(x), 0.1)
        return x


class OnnxPreview(nn.Module):
    """vaelight's ONNX graph on unscaled SD latents; keeps its latent-resolution output only."""

    def __init__(self, path: Path, scaling_factor: float):
        super().__init__()
        import onnxruntime  # bench extra; imported here so the rest of the module works without it

        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.scaling_factor = scaling_factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        unscaled = (x / self.scaling_factor).detach().cpu().numpy()
        (rgb,) = self.session.run(["output"], {"latent": unscaled})
        return torch.from_numpy(rgb).to(x.device)


def _load_state(net: nn.Module, path: Path) -> nn.Module:
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net.eval()


def birchlabs(version: str, root: Path | None = None) -> Peer:
    path = peer_file(f"birchlabs/decoder_sd{version}.pt", root)
    net = _load_state(ChannelsLastMLP(), path)
    return Peer(net, 4, 1, {"peer": f"birchlabs-sd{version}", "license": "BSD-3-Clause", "source": str(path)})


def vaeapprox(space: str, root: Path | None = None) -> Peer:
    name = "vaeapprox-sd1_model.pt" if space == "sd1" else f"vaeapprox-{space}.pt"
    path = peer_file(f"vaeapprox/{name}", root)
    channels = SPACES[space].channels
    net = _load_state(ApproxNN(channels), path)
    return Peer(net, channels, 2, {"peer": "vaeapprox", "license": "AGPL-3.0 (benchmark use only)", "source": str(path)})


def vaelight(root: Path | None = None) -> Peer:
    path = peer_file("vaelight/VAEpreview.onnx", root)
    net = OnnxPreview(path, SPACES["sd1"].scaling_factor)
    return Peer(net, 4, 1, {"peer": "vaelight", "license": "Apache-2.0", "source": str(path)})


PEERS = {
    "sd1/birchlabs-sd1.4": partial(birchlabs, "1.4"),
    "sd1/birchlabs-sd1.5": partial(birchlabs, "1.5"),
    "sd1/vaeapprox": partial(vaeapprox, "sd1"),
    "sdxl/vaeapprox": partial(vaeapprox, "sdxl"),
    "sd3/vaeapprox": partial(vaeapprox, "sd3"),
    "sd1/vaelight": vaelight,
}
