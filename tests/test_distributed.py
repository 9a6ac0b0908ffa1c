"""Data-parallel fitting under torchrun: 2 gloo processes on the CPU, a tiny diffusers VAE, tiny crops."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")

from builders import tiny_vae_folder, write_images  # noqa: E402

import previewers  # noqa: E402
from previewers.cli import main  # noqa: E402

pytestmark = pytest.mark.slow  # two torchrun launches and a fit in this process: a minute or more

ROOT = Path(__file__).resolve().parents[1]
MLP = ["--family", "mlp", "--args", '{"hidden": [8]}', "--steps", "300", "--batch", "4", "--patience", "100"]

# rank 1 fails in its 250th loss (past the checkpoints at steps 100 and 200), as a crashed GPU process would
DYING_RANK = """
import os, sys
from previewers.cli import main
from training import adam as gradient

calls, loss = [0], gradient.display_loss

def dying(*a):
    calls[0] += 1
    if os.environ["RANK"] == "1" and calls[0] == 250:
        raise RuntimeError("simulated crash of rank 1")
    return loss(*a)

gradient.display_loss = dying
sys.exit(main(sys.argv[1:]))
"""


def torchrun(*args, cwd=ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    vae = tiny_vae_folder(root / "vae")
    images = write_images(root / "images", count=4)
    common = ["fit", "--teacher", str(vae), "--space", "sd1", "--images", str(images), "--crops", "80",
              "--crop-size", "16", "--device", "cpu", "--seed", "3"]
    # one launch fits both families: 80 crops make two shards, one encoded and decoded by each process
    done = torchrun("-m", "previewers", *common, "--family", "affine,mlp", "--args",
                    '{"mlp": {"hidden": [8]}}', *MLP[4:], "--cache", str(root / "cache"), "--out", str(root / "two"))
    assert done.returncode == 0, done.stderr[-3000:]
    return root, common, done


def test_two_process_affine_equals_the_single_process_fit_and_mlp_records_its_world(case):
    root, common, done = case
    out = root / "two"
    assert done.stdout.count("wrote") == 2  # rank 0 alone writes and reports
    cache = next((root / "cache").iterdir())
    assert sorted(p.name for p in cache.iterdir()) == ["index.json", "shard-00000.safetensors", "shard-00001.safetensors"]

    single = root / "single.safetensors"
    assert main([*common, "--family", "affine", "--no-cache", "--out", str(single)]) == 0
    two, one = previewers.load(out / "sd1-affine.safetensors"), previewers.load(single)
    for name, value in one.state_dict().items():
        torch.testing.assert_close(two.state_dict()[name], value, atol=1e-5, rtol=1e-5)
    assert two.meta["recipe"]["world_size"] == 2 and one.meta["recipe"]["world_size"] == 1

    assert sorted(p.name for p in out.iterdir()) == ["sd1-affine.safetensors", "sd1-mlp.safetensors"]  # no ckpt, no tmp
    recipe = previewers.load(out / "sd1-mlp.safetensors").meta["recipe"]
    assert recipe["world_size"] == 2 and len(recipe["devices"]) == 2 and recipe["devices"][0].startswith("cpu")
    assert recipe["method"] == "Adam" and recipe["result"]["steps"] == 300


def test_a_dying_process_ends_the_run_and_the_fit_resumes_across_processes(case):
    root, common, _ = case
    out = root / "resumed" / "sd1-mlp.safetensors"
    script = root / "dying.py"
    script.write_text(DYING_RANK)
    run = [*common, *MLP, "--cache", str(root / "cache"), "--out", str(out)]
    died = torchrun(str(script), *run, cwd=root)
    assert died.returncode != 0
    assert "simulated crash of rank 1" in died.stderr
    assert sorted(p.name for p in out.parent.iterdir()) == ["sd1-mlp.safetensors.ckpt"]  # no weight file, no tmp

    resumed = torchrun("-m", "previewers", *run, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert sorted(p.name for p in out.parent.iterdir()) == ["sd1-mlp.safetensors"]
    result = previewers.load(out).meta["recipe"]["result"]
    assert result["resumed_from"] in (100, 200)
    straight = previewers.load(root / "two" / "sd1-mlp.safetensors")
    for name, value in straight.state_dict().items():
        torch.testing.assert_close(previewers.load(out).state_dict()[name], value, atol=0, rtol=0)
