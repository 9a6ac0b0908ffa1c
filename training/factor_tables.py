"""Published linear latent→RGB factor tables, wrapped as previewers so one evaluation scores them.

Figures only, copied from the tools' sources (each table's `source` names repository, file and
commit). Conventions, read from the same sources:

- Input: every tool applies its table to the latent as its denoiser holds it, which is our
  previewer input: SD/SDXL latents times the scaling factor, SD3/FLUX.1 latents shifted and
  scaled, FLUX.2 BatchNorm-normalised (tests/test_published.py pins this against the teachers).
- FLUX.2: the tools hold 128-channel packed latents at H/16 and unpatchify them before (ComfyUI's
  `latent_rgb_factors_reshape`, InvokeAI's `unpack_flux2`) or while (stable-diffusion.cpp's
  `patch_size` 2) applying a 32-row table: packed channel 4c + 2dy + dx goes to channel c at pixel
  (2y + dy, 2x + dx). That is our (B, 32, H/8, W/8) layout, so the 32 rows apply to it unchanged.
- Output: all four tools compute RGB = x·factors (+ bias) in about [-1, 1], then show
  (RGB + 1) / 2 clamped to [0, 1] (ComfyUI latent_preview.py `preview_to_image`, A1111
  `single_sample_to_image`, InvokeAI `sample_to_lowres_estimated_image`, stable-diffusion.cpp
  `preview_latent_video`); `as_previewer` folds that map into weight and bias.
- InvokeAI smooths its SDXL preview with a fixed 3x3 kernel after the projection. That preview is
  one linear 3x3 conv of the latent (kernel factors[c, o] · smooth[i, j]), built as the `conv`
  family. InvokeAI zero-pads; the `conv` family pads by replication, so the outermost ring of
  preview pixels differs (InvokeAI's fades toward grey there; 0.004 dB on 256² Kodak crops);
  inside it the two are identical.
- stable-diffusion.cpp's FLUX.2 table fits the taef2 latents best at twice their magnitude, so
  that tool may hold FLUX.2 latents at another scale; it is scored as the others, unchanged.

Some tools share figures: a1111 and sdcpp use the same SD3 table (the Stability AI SD3.5
reference), and InvokeAI's FLUX.2 table and bias are ComfyUI's.
"""

from dataclasses import dataclass

import torch

from previewers.models.families import Previewer, affine, conv
from previewers.models.spaces import SPACES

COMFY = "Comfy-Org/ComfyUI comfy/latent_formats.py @75399d78ddcc01f46f9b94521b29f1fe8a90ed53"
A1111 = "AUTOMATIC1111/stable-diffusion-webui modules/sd_vae_approx.py @326c86913ce02ac7e5efd720009db79575864e90"
# SD3 support is on A1111's dev branch; the index holds it in this fork of it.
A1111_SD3 = "sOoN92/stable-diffusion-webui modules/sd_vae_approx.py @14fad15d4cb506f3d1ea4cb0855a072a9693f00f"
INVOKE = "invoke-ai/InvokeAI invokeai/app/util/step_callback.py @01d6f09baf99f8acee60aa5d27abaa98961c6373"
SDCPP = "leejet/stable-diffusion.cpp latent-preview.h @40c324bf92cb9837c2cea8e7cbfe3f71f7726c39"


@dataclass(frozen=True)
class PublishedTable:
    space: str
    tool: str  # "comfyui", "a1111", "invokeai" or "sdcpp"
    factors: tuple[tuple[float, float, float], ...]  # (C, 3): RGB in [-1, 1] = x · factors + bias
    bias: tuple[float, float, float] | None
    source: str  # repository, path, commit (and the name in the file)
    smooth: tuple[tuple[float, float, float], ...] | None = None  # 3x3 kernel on each RGB channel


SD3_REFERENCE = (  # Stability AI's SD3.5 reference preview table, used by A1111 and sdcpp
    (-0.0645, 0.0177, 0.1052), (0.0028, 0.0312, 0.0650), (0.1848, 0.0762, 0.0360), (0.0944, 0.0360, 0.0889),
    (0.0897, 0.0506, -0.0364), (-0.0020, 0.1203, 0.0284), (0.0855, 0.0118, 0.0283), (-0.0539, 0.0658, 0.1047),
    (-0.0057, 0.0116, 0.0700), (-0.0412, 0.0281, -0.0039), (0.1106, 0.1171, 0.1220), (-0.0248, 0.0682, -0.0481),
    (0.0815, 0.0846, 0.1207), (-0.0120, -0.0055, -0.0867), (-0.0749, -0.0634, -0.0456), (-0.1418, -0.1457, -0.1259),
)

COMFY_FLUX2 = (
    (0.0058, 0.0113, 0.0073), (0.0495, 0.0443, 0.0836), (-0.0099, 0.0096, 0.0644), (0.2144, 0.3009, 0.3652),
    (0.0166, -0.0039, -0.0054), (0.0157, 0.0103, -0.0160), (-0.0398, 0.0902, -0.0235), (-0.0052, 0.0095, 0.0109),
    (-0.3527, -0.2712, -0.1666), (-0.0301, -0.0356, -0.0180), (-0.0107, 0.0078, 0.0013), (0.0746, 0.0090, -0.0941),
    (0.0156, 0.0169, 0.0070), (-0.0034, -0.0040, -0.0114), (0.0032, 0.0181, 0.0080), (-0.0939, -0.0008, 0.0186),
    (0.0018, 0.0043, 0.0104), (0.0284, 0.0056, -0.0127), (-0.0024, -0.0022, -0.0030), (0.1207, -0.0026, 0.0065),
    (0.0128, 0.0101, 0.0142), (0.0137, -0.0072, -0.0007), (0.0095, 0.0092, -0.0059), (0.0000, -0.0077, -0.0049),
    (-0.0465, -0.0204, -0.0312), (0.0095, 0.0012, -0.0066), (0.0290, -0.0034, 0.0025), (0.0220, 0.0169, -0.0048),
    (-0.0332, -0.0457, -0.0468), (-0.0085, 0.0389, 0.0609), (-0.0076, 0.0003, -0.0043), (-0.0111, -0.0460, -0.0614),
)
COMFY_FLUX2_BIAS = (-0.0329, -0.0718, -0.0851)

_TABLES = (
    # --- SD 1.x / 2.x ---
    PublishedTable("sd1", "comfyui", (
        (0.3512, 0.2297, 0.3227), (0.3250, 0.4974, 0.2350), (-0.2829, 0.1762, 0.2721), (-0.2120, -0.2616, -0.7177),
    ), None, f"{COMFY} SD15.latent_rgb_factors"),
    PublishedTable("sd1", "a1111", (
        (0.298, 0.207, 0.208), (0.187, 0.286, 0.173), (-0.158, 0.189, 0.264), (-0.184, -0.271, -0.473),
    ), None, f"{A1111} cheap_approximation (SD1)"),
    PublishedTable("sd1", "invokeai", (
        (0.3444, 0.1385, 0.0670), (0.1247, 0.4027, 0.1494), (-0.3192, 0.2513, 0.2103), (-0.1307, -0.1874, -0.7445),
    ), None, f"{INVOKE} SD1_5_LATENT_RGB_FACTORS"),
    PublishedTable("sd1", "sdcpp", (
        (0.337366, 0.216344, 0.257386), (0.165636, 0.386828, 0.046994),
        (-0.267803, 0.237036, 0.223517), (-0.178022, -0.200862, -0.678514),
    ), (-0.017478, -0.055834, -0.105825), f"{SDCPP} sd_latent_rgb_proj, sd_latent_rgb_bias"),
    # --- SDXL ---
    PublishedTable("sdxl", "comfyui", (
        (0.3651, 0.4232, 0.4341), (-0.2533, -0.0042, 0.1068), (0.1076, 0.1111, -0.0362), (-0.3165, -0.2492, -0.2188),
    ), (0.1084, -0.0175, -0.0011), f"{COMFY} SDXL.latent_rgb_factors, latent_rgb_factors_bias"),
    PublishedTable("sdxl", "a1111", (
        (0.3448, 0.4168, 0.4395), (-0.1953, -0.0290, 0.0250), (0.1074, 0.0886, -0.0163), (-0.3730, -0.2499, -0.2088),
    ), None, f"{A1111} cheap_approximation (SDXL)"),
    PublishedTable("sdxl", "invokeai", (
        (0.3816, 0.4930, 0.5320), (-0.3753, 0.1631, 0.1739), (0.1770, 0.3588, -0.2048), (-0.4350, -0.2644, -0.4289),
    ), None, f"{INVOKE} SDXL_LATENT_RGB_FACTORS, SDXL_SMOOTH_MATRIX",
        smooth=((0.0358, 0.0964, 0.0358), (0.0964, 0.4711, 0.0964), (0.0358, 0.0964, 0.0358))),
    PublishedTable("sdxl", "sdcpp", (
        (0.258303, 0.277640, 0.329699), (-0.299701, 0.105446, 0.014194),
        (0.050522, 0.186163, -0.143257), (-0.211938, -0.149892, -0.080036),
    ), (0.144381, -0.033313, 0.007061), f"{SDCPP} sdxl_latent_rgb_proj, sdxl_latent_rgb_bias"),
    # --- SD3 / 3.5 ---
    PublishedTable("sd3", "comfyui", (
        (-0.0922, -0.0175, 0.0749), (0.0311, 0.0633, 0.0954), (0.1994, 0.0927, 0.0458), (0.0856, 0.0339, 0.0902),
        (0.0587, 0.0272, -0.0496), (-0.0006, 0.1104, 0.0309), (0.0978, 0.0306, 0.0427), (-0.0042, 0.1038, 0.1358),
        (-0.0194, 0.0020, 0.0669), (-0.0488, 0.0130, -0.0268), (0.0922, 0.0988, 0.0951), (-0.0278, 0.0524, -0.0542),
        (0.0332, 0.0456, 0.0895), (-0.0069, -0.0030, -0.0810), (-0.0596, -0.0465, -0.0293), (-0.1448, -0.1463, -0.1189),
    ), (0.2394, 0.2135, 0.1925), f"{COMFY} SD3.latent_rgb_factors, latent_rgb_factors_bias"),
    PublishedTable("sd3", "a1111", SD3_REFERENCE, None, f"{A1111_SD3} cheap_approximation (SD3)"),
    PublishedTable("sd3", "invokeai", (
        (-0.05240681, 0.03251581, 0.0749016), (-0.0580572, 0.00759826, 0.05729818),
        (0.16144888, 0.01270368, -0.03768577), (0.14418615, 0.08460266, 0.15941818),
        (0.04894035, 0.0056485, -0.06686988), (0.05187166, 0.19222395, 0.06261094),
        (0.1539433, 0.04818359, 0.07103094), (-0.08601796, 0.09013458, 0.10893912),
        (-0.12398469, -0.06766567, 0.0033688), (-0.0439737, 0.07825329, 0.02258823),
        (0.03101129, 0.06382551, 0.07753657), (-0.01315361, 0.08554491, -0.08772475),
        (0.06464487, 0.05914605, 0.13262741), (-0.07863674, -0.02261737, -0.12761454),
        (-0.09923835, -0.08010759, -0.06264447), (-0.03392309, -0.0804029, -0.06078822),
    ), None, f"{INVOKE} SD3_5_LATENT_RGB_FACTORS"),
    PublishedTable("sd3", "sdcpp", SD3_REFERENCE, (0.0, 0.0, 0.0), f"{SDCPP} sd3_latent_rgb_proj, sd3_latent_rgb_bias"),
    # --- FLUX.1 ---
    PublishedTable("flux1", "comfyui", (
        (-0.0346, 0.0244, 0.0681), (0.0034, 0.0210, 0.0687), (0.0275, -0.0668, -0.0433), (-0.0174, 0.0160, 0.0617),
        (0.0859, 0.0721, 0.0329), (0.0004, 0.0383, 0.0115), (0.0405, 0.0861, 0.0915), (-0.0236, -0.0185, -0.0259),
        (-0.0245, 0.0250, 0.1180), (0.1008, 0.0755, -0.0421), (-0.0515, 0.0201, 0.0011), (0.0428, -0.0012, -0.0036),
        (0.0817, 0.0765, 0.0749), (-0.1264, -0.0522, -0.1103), (-0.0280, -0.0881, -0.0499), (-0.1262, -0.0982, -0.0778),
    ), (-0.0329, -0.0718, -0.0851), f"{COMFY} Flux.latent_rgb_factors, latent_rgb_factors_bias"),
    PublishedTable("flux1", "invokeai", (
        (-0.0412, 0.0149, 0.0521), (0.0056, 0.0291, 0.0768), (0.0342, -0.0681, -0.0427), (-0.0258, 0.0092, 0.0463),
        (0.0863, 0.0784, 0.0547), (-0.0017, 0.0402, 0.0158), (0.0501, 0.1058, 0.1152), (-0.0209, -0.0218, -0.0329),
        (-0.0314, 0.0083, 0.0896), (0.0851, 0.0665, -0.0472), (-0.0534, 0.0238, -0.0024), (0.0452, -0.0026, 0.0048),
        (0.0892, 0.0831, 0.0881), (-0.1117, -0.0304, -0.0789), (0.0027, -0.0479, -0.0043), (-0.1146, -0.0827, -0.0598),
    ), None, f"{INVOKE} FLUX_LATENT_RGB_FACTORS"),
    PublishedTable("flux1", "sdcpp", (
        (-0.041168, 0.019917, 0.097253), (0.028096, 0.026730, 0.129576), (0.065618, -0.067950, -0.014651),
        (-0.012998, -0.014762, 0.081251), (0.078567, 0.059296, -0.024687), (-0.015987, -0.003697, 0.005012),
        (0.033605, 0.138999, 0.068517), (-0.024450, -0.063567, -0.030101), (-0.040194, -0.016710, 0.127185),
        (0.112681, 0.088764, -0.041940), (-0.023498, 0.093664, 0.025543), (0.082899, 0.048320, 0.007491),
        (0.075712, 0.074139, 0.081965), (-0.143501, 0.018263, -0.136138), (-0.025767, -0.082035, -0.040023),
        (-0.111849, -0.055589, -0.032361),
    ), (0.024600, -0.006937, -0.008089), f"{SDCPP} flux_latent_rgb_proj, flux_latent_rgb_bias"),
    # --- FLUX.2 (rows are the 32 unpatchified channels, see the module docstring) ---
    PublishedTable("flux2", "comfyui", COMFY_FLUX2, COMFY_FLUX2_BIAS,
                   f"{COMFY} Flux2.latent_rgb_factors, latent_rgb_factors_bias, latent_rgb_factors_reshape"),
    PublishedTable("flux2", "invokeai", COMFY_FLUX2, COMFY_FLUX2_BIAS,
                   f"{INVOKE} FLUX2_LATENT_RGB_FACTORS, FLUX2_LATENT_RGB_BIAS (ComfyUI's figures)"),
    PublishedTable("flux2", "sdcpp", (
        (0.000736, -0.008385, -0.019710), (-0.001352, -0.016392, 0.020693), (-0.006376, 0.002428, 0.036736),
        (0.039384, 0.074167, 0.119789), (0.007464, -0.005705, -0.004734), (-0.004086, 0.005287, -0.000409),
        (-0.032835, 0.050802, -0.028120), (-0.003158, -0.000835, 0.000406), (-0.112840, -0.084337, -0.023083),
        (0.001462, -0.006656, 0.000549), (-0.009980, -0.007480, 0.009702), (0.032540, 0.000214, -0.061388),
        (0.011023, 0.000694, 0.007143), (-0.001468, -0.006723, -0.001678), (-0.005921, -0.010320, -0.003907),
        (-0.028434, 0.027584, 0.018457), (0.014349, 0.011523, 0.000441), (0.009874, 0.003081, 0.001507),
        (0.002218, 0.005712, 0.001563), (0.053010, -0.019844, 0.008683), (-0.002507, 0.005384, 0.000938),
        (-0.002177, -0.011366, 0.003559), (-0.000261, 0.015121, -0.003240), (-0.003944, -0.002083, 0.005043),
        (-0.009138, 0.011336, 0.003781), (0.011429, 0.003985, -0.003855), (0.010518, -0.005586, 0.010131),
        (0.007883, 0.002912, -0.001473), (-0.003318, -0.003160, 0.003684), (-0.034560, -0.008740, 0.012996),
        (0.000166, 0.001079, -0.012153), (0.017772, 0.000937, -0.011953),
    ), (-0.028738, -0.098463, -0.107619), f"{SDCPP} flux2_latent_rgb_proj, flux2_latent_rgb_bias"),
)

TABLES: dict[str, PublishedTable] = {f"{t.space}/{t.tool}": t for t in _TABLES}


@torch.no_grad()
def as_previewer(table: PublishedTable) -> Previewer:
    """The table as a previewer: denoiser latents (B, C, h, w) → the tool's preview in [0, 1].

    `affine` with weight factors/2 and bias (bias + 1)/2 (the tools' (RGB + 1)/2 display map, so
    a table without bias still needs the 0.5); `conv` with one 3x3 kernel when the tool smooths.
    """
    channels = SPACES[table.space].channels
    factors = torch.tensor(table.factors, dtype=torch.float32).T / 2  # (3, C), display units
    if factors.shape[1] != channels:
        raise ValueError(f"{table.space}/{table.tool}: {factors.shape[1]} rows for a {channels}-channel space")
    bias = torch.tensor(table.bias or (0.0, 0.0, 0.0))
    if table.smooth is None:
        previewer = affine(channels)
        layer = previewer.body
        layer.weight.copy_(factors[:, :, None, None])
    else:
        previewer = conv(channels, channels=(), kernels=(3,))
        layer = previewer.body[0]
        smooth = torch.tensor(table.smooth)
        layer.weight.copy_(factors[:, :, None, None] * smooth)  # (3, C, 3, 3)
        bias = bias * smooth.sum()  # the tool's bias is smoothed too: scaled by the kernel sum
    layer.bias.copy_((bias + 1) / 2)
    previewer.meta = {"tool": table.tool, "space": table.space, "source": table.source,
                      "table": f"{table.space}/{table.tool}"}
    return previewer.eval()
