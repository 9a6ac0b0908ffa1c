#!/usr/bin/env bash
# The first GPU run (issue 29): every GPU measurement the project needs, in one call of at most 8 minutes on one GPU.
#
#     bash benchmarks/gpu_prepare.sh     # HERE first: fills .gpu-carry/ (../shared's teachers, kodak24) and .whl/
#     bash benchmarks/gpu.sh             # on the GPU machine (device tool: carry .gpu-carry and .whl)
#
# Steps, in priority order (each time-boxed with `timeout`; a failure is logged and the run goes on; a step is
# skipped when less than its minimum is left of GPU_SH_BUDGET, so the whole run ends inside it):
#   tests              pytest of the CUDA tests (tests -k "cuda or gpu": test_callback's sync check, test_day_one's GPU path)
#   first-use-net      previewer="auto"'s first use on CUDA for a full-size SD 1.5 AutoencoderKL (random weights):
#                      closed form, then the day-one net and upsampler within previewers.first_use.fit's
#                      GPU_NET_BUDGET_S and GPU_UPSAMPLER_BUDGET_S (timed)
#   overhead-fp16      python -m benchmarks.overhead --device cuda --dtype float16 (full SD 1.5 UNet step)
#   speed-fp16         python -m benchmarks.speed --dtype float16, sd1 and flux2 (4 and 32 channels)
#   torchrun           an nccl all-reduce + DDP smoke test and a fit, both under `torchrun --nproc_per_node=1`
#   day-one-taesd      python -m benchmarks.day_one --device cuda --upsampler: first use against AutoencoderTiny(taesd):
#                      closed form, net and upsampler (DAY_ONE_BUDGET s each), scored on kodak24 beside the shipped
#                      sd1-conv and sd1-upsampler
#   speed-bf16         the same as speed-fp16 in bfloat16
#   first-use-module   python -m benchmarks.first_use --device cuda (closed form only)
#   overhead-fp32      python -m benchmarks.overhead --device cuda
#   speed-fp16-rest    speed in float16 for sdxl, sd3, flux1
#   speed-bf16-rest    speed in bfloat16 for sdxl, sd3, flux1
#   first-use-net-fp16 first-use-net with the VAE in float16 (what pipelines load)
#
# Environment: OUT (the device tool's output folder: gpu-run.tgz with results/*-cuda*.md and logs/, plus
# gpu-summary-cuda.md and gpu.log; without OUT the reports go to benchmarks/results/ and the logs stay in the work
# folder; a dry run leaves both there), GPU_SH_BUDGET (seconds for the whole run, default 465), GPU_SH_STEPS
# (space-separated step names: run only those), GPU_SH_WORK (work folder, default /tmp/latent-preview-gpu), PYTHON (default python3), DAY_ONE_BUDGET
# (default 60), DAY_ONE_COUNT (kodak24 tiles, default 48), GPU_SH_DRY=1 (a dry run on a CPU: every step in its
# --quick / tiny form on the CPU, to catch mistakes before spending device time; its numbers mean nothing).
set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
START=$(date +%s)
BUDGET=${GPU_SH_BUDGET:-465}
DEADLINE=$((START + BUDGET))
ONLY=${GPU_SH_STEPS:-}
DRY=${GPU_SH_DRY:-0}
PY=${PYTHON:-python3}
W=${GPU_SH_WORK:-/tmp/latent-preview-gpu}
rm -rf "$W"
mkdir -p "$W/results" "$W/logs" "$W/py" "$W/cache" "$W/tmp"
MAIN_LOG="$W/logs/gpu.log"
STATUS="$W/status.tsv"
: >"$STATUS"

# every cache and temporary folder of the run stays in the work folder
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TQDM_MININTERVAL=10 LATENT_PREVIEW_CACHE="$W/cache" TMPDIR="$W/tmp" GPU_SH_DRY="$DRY"
export GPU_SH_RESULTS="$W/results"
if [ "$DRY" = 1 ]; then
    DEVICE=cpu
    QUICK=--quick
    DAY_ONE_BUDGET=${DAY_ONE_BUDGET:-30} DAY_ONE_COUNT=${DAY_ONE_COUNT:-2} DAY_ONE_TINY="--steps 20 --crops 32"
else
    DEVICE=cuda
    QUICK=
    DAY_ONE_BUDGET=${DAY_ONE_BUDGET:-60} DAY_ONE_COUNT=${DAY_ONE_COUNT:-48} DAY_ONE_TINY=
fi
export GPU_SH_DEVICE="$DEVICE"

log() { echo "$*" | tee -a "$MAIN_LOG"; }

bundle() {  # what comes back: one archive (the tool returns at most 8 files), the summary and the main log
    [ -n "${OUT:-}" ] || return 0
    tar czf "$OUT/.gpu-run.tgz.part" -C "$W" results logs 2>/dev/null && mv "$OUT/.gpu-run.tgz.part" "$OUT/gpu-run.tgz"
    cp "$MAIN_LOG" "$OUT/gpu.log" 2>/dev/null
}

footer() {  # name the device under every report this run wrote
    local f
    for f in "$W"/results/*.md; do
        [ -f "$f" ] || continue
        grep -q "^Run by benchmarks/gpu.sh" "$f" || printf '\nRun by benchmarks/gpu.sh on %s, %s.\n' "$DEVICE_LINE" \
            "$(date -u +%Y-%m-%dT%H:%MZ)" >>"$f"
    done
}

# step NAME LIMIT_S MIN_S COMMAND...: run COMMAND under `timeout` (at most LIMIT_S, or what is left of the budget);
# skip it when less than MIN_S is left or GPU_SH_STEPS does not name it.
step() {
    local name=$1 limit=$2 min=$3
    shift 3
    if [ -n "$ONLY" ] && [[ " $ONLY " != *" $name "* ]]; then
        return 0
    fi
    local left=$((DEADLINE - $(date +%s)))
    if [ "$left" -lt "$min" ]; then
        log "== $name: skipped, ${left} s left of the ${BUDGET} s budget (needs ${min} s)"
        printf '%s\tskipped (time)\t0\t%s\n' "$name" "$limit" >>"$STATUS"
        return 0
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    log "== $name (at most ${limit} s, $(($(date +%s) - START)) s into the run): $*"
    local t0 t1 rc state
    t0=$(date +%s.%N)
    timeout -k 10 "$limit" "$@" >"$W/logs/$name.log" 2>&1
    rc=$?
    t1=$(date +%s.%N)
    case $rc in
        0) state=ok ;;
        124 | 137) state="timed out" ;;
        *) state="failed (exit $rc)" ;;
    esac
    local seconds
    seconds=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.0f", b - a}')
    printf '%s\t%s\t%s\t%s\n' "$name" "$state" "$seconds" "$limit" >>"$STATUS"
    tail -n 4 "$W/logs/$name.log" | cut -c1-300 | sed 's/^/   | /' | tee -a "$MAIN_LOG"
    log "   -> $name: $state in ${seconds} s"
    footer
    bundle
}

# ---------------------------------------------------------------------------------------------------------------
# Inline programs (benchmarks/ modules stay as they are; these drive them on CUDA)

cat >"$W/py/install_wheels.py" <<'PYEOF'
"""Install the carried wheels whose distribution is missing here or older than the project needs (--target)."""
import re
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

NEED = {"diffusers": "0.40", "huggingface-hub": "1.32.0", "safetensors": "0.8.0", "tqdm": "4.60", "pytest": "8"}


def key(v):
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


folder, target = Path(sys.argv[1]), sys.argv[2]
pick = []
for wheel in sorted(folder.glob("*.whl")):
    name, version = wheel.name.split("-")[:2]
    norm = re.sub(r"[-_.]+", "-", name).lower()
    have = None
    for candidate in (norm, name, norm.replace("-", "_")):
        try:
            have = metadata.version(candidate)
            break
        except metadata.PackageNotFoundError:
            pass
    if have is None or (norm in NEED and key(have) < key(NEED[norm])):
        pick.append(wheel)
        print(f"install {name} {version} (here: {have or 'missing'})")
if pick:
    Path(target).mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                           "--no-cache-dir", "--upgrade", "--target", target, *map(str, pick)])
    if done.returncode:
        print("pip failed: unpacking the wheels instead")
        for wheel in pick:
            zipfile.ZipFile(wheel).extractall(target)
print(f"{len(pick)} wheels installed into {target}" if pick else "every carried distribution is already here")
PYEOF

cat >"$W/py/first_use_net.py" <<'PYEOF'
"""previewer="auto"'s first use on CUDA for a full-size SD 1.5 AutoencoderKL (random weights, SD 1.5 config):
previewers.first_use.fit.fitted_previewer fits the closed form, then (net_on_first_use: CUDA VAE) trains the day-one net
within GPU_NET_BUDGET_S and the upsampler within GPU_UPSAMPLER_BUDGET_S. Times each part. argv: float32|float16 (the
VAE's dtype)."""
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import diffusers
import torch

from benchmarks.reference import SD15_VAE
from benchmarks.timing import machine
from previewers.first_use import fit as first_use
from previewers.pipelines.latents import bind_vae

dry = os.environ.get("GPU_SH_DRY") == "1"
device = torch.device(os.environ.get("GPU_SH_DEVICE", "cuda"))
dtype_name = sys.argv[1] if len(sys.argv) > 1 else "float32"
dtype = getattr(torch, dtype_name)
config = dict(SD15_VAE, block_out_channels=(32, 32, 32, 32), layers_per_block=1) if dry else SD15_VAE
torch.manual_seed(0)
vae = diffusers.AutoencoderKL(**config).to(device, dtype).eval().requires_grad_(False)
latents = bind_vae(vae)
folder = Path(tempfile.mkdtemp(prefix="first-use-"))
notes = []
start = time.perf_counter()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    chosen = first_use.fitted_previewer(latents, folder=folder)
first_use_s = time.perf_counter() - start
notes += [f"warning: {w.message}" for w in caught if "latent-preview" in str(w.message)]
entries = first_use.cached_entries(latents, folder)
from training.day_one import train_day_one_net, train_day_one_upsampler  # noqa: E402

for role, train, budget in (("net", train_day_one_net, first_use.GPU_NET_BUDGET_S),
                            ("upsampler", train_day_one_upsampler, first_use.GPU_UPSAMPLER_BUDGET_S)):
    if role not in entries:
        notes.append(f"first use trained no {role} (net_on_first_use: {first_use.net_on_first_use(latents)}, "
                     f"upsampler_on_first_use: {first_use.upsampler_on_first_use(latents)}); trained explicitly")
        kwargs = dict(steps=20, crops=16) if dry else {}
        entries[role] = train(latents, budget_s=budget, device=device, folder=folder, **kwargs)
closed = entries["closed_form"]


def parts(role):
    r = entries[role].meta["recipe"]
    result, adam_s = r["result"], r["seconds"] - r["pairs_seconds"]
    data = r.get("data") if isinstance(r.get("data"), dict) else {}
    crops = data.get("crops", {}).get("count", "?") if isinstance(data.get("crops"), dict) else "?"
    return [
        f"| {role}: pairs ({crops} crops encoded + decoded{', plus the held-out ones' if role == 'net' else ', cached'}) "
        f"| {r['pairs_seconds']:.1f} | |",
        f"| {role}: Adam | {adam_s:.1f} | {result['steps']} steps ({result['steps'] / max(adam_s, 1e-9):.0f}/s), best "
        f"at {result['best_step']}, stopped early: {result['stopped_early']}, budget {r.get('budget_s')} s |",
        f"| {role}: whole | {r['seconds']:.1f} | held-out PSNR {entries[role].meta['metrics']['clean']['psnr']:.2f} dB; "
        f"goal: under 120 s on a GPU: {'met' if r['seconds'] < 120 else 'NOT met'} |",
    ]


lines = [
    f"# First use on {device.type}: SD 1.5 AutoencoderKL ({dtype_name}, random weights)", "",
    f"On {machine(device, dtype)}. `previewers.first_use.fit.fitted_previewer` as `previewer=\"auto\"` runs it on first "
    f"use (fresh cache folder); the VAE's random weights make the PSNRs meaningless, the seconds are the point.", "",
    "| part | seconds | detail |", "|---|---|---|",
    f"| whole first use (closed form, net, upsampler) | {first_use_s:.1f} | kept: {chosen.family} |",
    f"| closed form | {closed.meta['recipe']['seconds']} | {closed.family}, held-out PSNR "
    f"{closed.meta['metrics']['clean']['psnr']:.2f} dB |",
    *parts("net"), *parts("upsampler"), "",
    *(f"- {n}" for n in notes),
]
text = "\n".join(lines) + "\n"
print(text)
suffix = "" if dtype_name == "float32" else f"-{dtype_name}"
Path(os.environ["GPU_SH_RESULTS"], f"first-use-net-{device.type}{suffix}.md").write_text(text)
PYEOF

cat >"$W/py/nccl_smoke.py" <<'PYEOF'
"""Under torchrun: one all-reduce and one DDP backward through the process group (nccl on CUDA, gloo on the CPU).
The project's fit makes no process group for one process (training/distributed.py), so on one GPU this is the only
part of the run that touches nccl."""
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

cuda = os.environ.get("GPU_SH_DEVICE", "cuda") == "cuda"
rank = int(os.environ["LOCAL_RANK"])
device = torch.device("cuda", rank) if cuda else torch.device("cpu")
if cuda:
    torch.cuda.set_device(device)
dist.init_process_group("nccl" if cuda else "gloo")
x = torch.full((4,), float(dist.get_rank() + 1), device=device)
dist.all_reduce(x)
net = DistributedDataParallel(torch.nn.Conv2d(4, 3, 3, padding=1).to(device), device_ids=[rank] if cuda else None)
loss = net(torch.randn(2, 4, 16, 16, device=device)).square().mean()
loss.backward()
print(f"backend {dist.get_backend()}, world {dist.get_world_size()}, all_reduce {x.tolist()}, DDP grad norm "
      f"{net.module.weight.grad.norm().item():.4f}"
      + (f", nccl {'.'.join(map(str, torch.cuda.nccl.version()))}" if cuda else ""))
dist.destroy_process_group()
PYEOF

cat >"$W/py/torchrun_report.py" <<'PYEOF'
"""Markdown of the torchrun step: the fitted files' recipes (world size, devices, seconds) and the logs' tails."""
import os
import sys
from pathlib import Path

import previewers

out, logs = Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]]
lines = ["# torchrun on one GPU", "", f"Device: {os.environ.get('GPU_SH_DEVICE_LINE', '?')}", ""]
for log in logs:
    text = log.read_text(errors="replace").strip().splitlines() if log.exists() else ["(no log)"]
    lines += [f"`{log.name}` (last lines):", "", "```", *text[-8:], "```", ""]
lines += ["| file | family | world size | devices | seconds |", "|---|---|---|---|---|"]
for f in sorted(out.glob("*.safetensors")):
    recipe = previewers.load(f).meta["recipe"]
    lines.append(f"| {f.name} | {recipe.get('family', '?')} | {recipe.get('world_size')} | {recipe.get('devices')} | "
                 f"{recipe.get('seconds')} |")
text = "\n".join(lines) + "\n"
print(text)
Path(os.environ["GPU_SH_RESULTS"], f"torchrun-{os.environ.get('GPU_SH_DEVICE', 'cuda')}.md").write_text(text)
PYEOF

# the torchrun step: the nccl smoke test, then the documented fit command with one process (tiny crops and steps)
torchrun_step() {
    local teacher="$SHARED/models/teachers/taesd_decoder.safetensors" crops=256 side=128 steps=300
    [ "$DRY" = 1 ] && crops=16 side=64 steps=20
    "$PY" -m torch.distributed.run --standalone --nproc_per_node=1 "$W/py/nccl_smoke.py" 2>&1 | tee "$W/logs/nccl-smoke.txt"
    "$PY" -m torch.distributed.run --standalone --nproc_per_node=1 -m previewers fit --teacher "$teacher" \
        --space sd1 --images "$ROOT/previewers/first_use/fit_images" --crops "$crops" --crop-size "$side" \
        --family affine,mlp --args '{"mlp": {"hidden": [16]}}' --steps "$steps" --batch 64 --patience 100 \
        --device "$DEVICE" --cache "$W/ddp-cache" --out "$W/ddp" 2>&1 | tee "$W/logs/torchrun-fit.txt"
    local rc=${PIPESTATUS[0]}
    "$PY" "$W/py/torchrun_report.py" "$W/ddp" "$W/logs/nccl-smoke.txt" "$W/logs/torchrun-fit.txt"
    return "$rc"
}
export -f torchrun_step
# ../shared beside the checkout, else the copy gpu_prepare.sh made (training/shared_folder.py reads the variable)
SHARED="$ROOT/../shared"
[ -d "$SHARED/models/teachers" ] || SHARED="$ROOT/.gpu-carry/shared"
export LATENT_PREVIEW_SHARED="$SHARED"
export ROOT W PY DEVICE DRY SHARED

# ---------------------------------------------------------------------------------------------------------------
# setup: what is here, the carried wheels, ../shared from .gpu-carry

log "benchmarks/gpu.sh: $(date -u +%Y-%m-%dT%H:%M:%SZ), budget ${BUDGET} s, work folder $W, dry run: $DRY"
if [ "$DRY" = 1 ]; then
    DEVICE_LINE="CPU (dry run: GPU_SH_DRY=1, numbers mean nothing)"
else
    DEVICE_LINE=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -n 1)
fi
export GPU_SH_DEVICE_LINE="$DEVICE_LINE"
log "device: $DEVICE_LINE"
log "python: $("$PY" -c 'import sys; print(sys.executable, sys.version.split()[0])' 2>&1)"
log "torch: $("$PY" -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())' 2>&1 | tail -n 1)"
if [ -d "$ROOT/.whl" ] && [ "$DRY" != 1 ]; then
    "$PY" "$W/py/install_wheels.py" "$ROOT/.whl" /tmp/site 2>&1 | tee -a "$MAIN_LOG"
    export PYTHONPATH="/tmp/site:$ROOT"
else
    export PYTHONPATH="$ROOT"
fi
log "packages: $("$PY" -c 'import diffusers, huggingface_hub, safetensors, tqdm, numpy, PIL; import previewers, training.fit; print("diffusers", diffusers.__version__, "hub", huggingface_hub.__version__, "safetensors", safetensors.__version__, "numpy", numpy.__version__)' 2>&1 | tail -n 1)"
for m in skimage pytest; do
    "$PY" -c "import $m" 2>/dev/null || log "missing: $m (steps that need it will fail)"
done
if [ -d "$SHARED/models/teachers" ]; then
    log "shared folder: $SHARED"
else
    log "no ../shared and no .gpu-carry/shared: run bash benchmarks/gpu_prepare.sh first and carry .gpu-carry"
fi
if [ "$DRY" != 1 ] && [ "$("$PY" -c 'import torch; print(torch.cuda.is_available())' 2>/dev/null)" != True ]; then
    log "torch sees no CUDA device: stopping (GPU_SH_DRY=1 runs the CPU dry run)"
    bundle
    exit 1
fi
bundle

# ---------------------------------------------------------------------------------------------------------------
# the steps, most wanted first: step NAME LIMIT_S MIN_S COMMAND...

R="$W/results"
step tests 120 40 "$PY" -m pytest -q -p no:cacheprovider --continue-on-collection-errors tests -k "cuda or gpu" -rs
step first-use-net 330 260 "$PY" "$W/py/first_use_net.py" float32
step overhead-fp16 150 60 "$PY" -m benchmarks.overhead --device "$DEVICE" --dtype float16 $QUICK \
    --out "$R/overhead-$DEVICE-float16.md"
step speed-fp16 120 50 "$PY" -m benchmarks.speed --device "$DEVICE" --dtype float16 --spaces sd1 flux2 $QUICK \
    --out "$R/speed-$DEVICE-float16-sd1-flux2.md"
step torchrun 90 40 bash -c torchrun_step
step day-one-taesd 220 $((2 * DAY_ONE_BUDGET + 50)) "$PY" -m benchmarks.day_one --teacher taesd --device "$DEVICE" \
    --budget "$DAY_ONE_BUDGET" --count "$DAY_ONE_COUNT" --validate '' --upsampler $DAY_ONE_TINY \
    --out "$R/day-one-taesd-$DEVICE.md"
step speed-bf16 120 50 "$PY" -m benchmarks.speed --device "$DEVICE" --dtype bfloat16 --spaces sd1 flux2 $QUICK \
    --out "$R/speed-$DEVICE-bfloat16-sd1-flux2.md"
if [ "$DRY" = 1 ]; then  # no --quick: the full SD 1.5 VAE fit takes minutes on a CPU; check that it starts
    step first-use-module 60 20 "$PY" -m benchmarks.first_use --help
else
    step first-use-module 90 30 "$PY" -m benchmarks.first_use --device cuda --out "$R/first-use-cuda.md"
fi
step overhead-fp32 150 60 "$PY" -m benchmarks.overhead --device "$DEVICE" $QUICK --out "$R/overhead-$DEVICE.md"
step speed-fp16-rest 150 60 "$PY" -m benchmarks.speed --device "$DEVICE" --dtype float16 --spaces sdxl sd3 flux1 \
    $QUICK --out "$R/speed-$DEVICE-float16-sdxl-sd3-flux1.md"
step speed-bf16-rest 150 60 "$PY" -m benchmarks.speed --device "$DEVICE" --dtype bfloat16 --spaces sdxl sd3 flux1 \
    $QUICK --out "$R/speed-$DEVICE-bfloat16-sdxl-sd3-flux1.md"
step first-use-net-fp16 330 260 "$PY" "$W/py/first_use_net.py" float16

# ---------------------------------------------------------------------------------------------------------------
# summary

SUMMARY="$R/gpu-run-$DEVICE.md"
{
    echo "# The GPU run (benchmarks/gpu.sh)"
    echo
    echo "Device: $DEVICE_LINE. $(grep -m1 '^torch:' "$MAIN_LOG" || true). Budget ${BUDGET} s, whole run $(($(date +%s) - START)) s."
    echo
    echo "| step | result | seconds | limit (s) |"
    echo "|---|---|---|---|"
    awk -F'\t' '{printf "| %s | %s | %s | %s |\n", $1, $2, $3, $4}' "$STATUS"
    skipped=$(awk -F'\t' '$2 != "ok" {printf "%s ", $1}' "$STATUS")
    if [ -n "$skipped" ]; then
        echo
        echo "Not done: ${skipped% }. To run just those: \`GPU_SH_STEPS='${skipped% }' bash benchmarks/gpu.sh\`."
    fi
    echo
    echo "Reports: $(cd "$R" && ls *.md 2>/dev/null | grep -v "^gpu-run" | tr '\n' ' ')"
} >"$SUMMARY"
footer
cat "$SUMMARY" | tee -a "$MAIN_LOG"
if [ -n "${OUT:-}" ]; then
    cp "$SUMMARY" "$OUT/gpu-summary-$DEVICE.md"
    bundle
    log "files under \$OUT: gpu-run.tgz (results/, logs/), gpu-summary-$DEVICE.md, gpu.log"
elif [ "$DRY" = 1 ]; then
    log "dry run: reports and logs stay in $W (their numbers mean nothing; benchmarks/results/ is left as it was)"
else
    mkdir -p "$ROOT/benchmarks/results"
    cp "$R"/*.md "$ROOT/benchmarks/results/" 2>/dev/null
    log "reports copied to benchmarks/results/; logs in $W/logs"
fi
