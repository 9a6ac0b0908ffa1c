"""diffusers' own tiny pipeline fixtures (the shared folder's diffusers-tests), built offline.

Each pipeline test class there has `get_dummy_components()` and `get_dummy_inputs(...)`: the tiny random pipeline
diffusers tests itself with. `fixtures()` lists them; `build(fixture)` returns (pipeline, call kwargs). Tokenizers
and tiny text encoders come from the local stand-in Hub cache that `fakehub.py` writes (see its README).
"""

import importlib
import inspect
import os
import subprocess
import sys
import unittest
from dataclasses import dataclass
from pathlib import Path

from training.shared_folder import SHARED

TESTS = SHARED / "diffusers-tests"
HUB = Path(os.environ.get("LATENT_PREVIEW_FAKEHUB", "/tmp/latent-preview-fakehub"))


@dataclass(frozen=True)
class Fixture:
    module: str  # tests.pipelines.wan.test_wan
    name: str  # WanPipelineTesterConfig

    @property
    def label(self) -> str:
        return f"{self.module.split('.', 2)[2]}:{self.name}"


def offline_hub() -> None:
    """Write the stand-in Hub cache once and point huggingface_hub at it, offline."""
    if not (HUB / ".done").exists():
        subprocess.run([sys.executable, str(TESTS / "fakehub.py"), str(HUB)], check=True, capture_output=True)
        (HUB / ".done").touch()
    os.environ.update(HF_HUB_CACHE=str(HUB), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))


def builds_alone(cls) -> bool:
    """Whether get_dummy_components() needs no arguments (a base class such as AdapterTests takes a variant name)."""
    params = list(inspect.signature(cls.get_dummy_components).parameters.values())[1:]
    return all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params)


def fixtures() -> tuple[list[Fixture], dict[str, str]]:
    """Every pipeline test class with dummy components, and the modules that fail to import (name → reason)."""
    offline_hub()
    found, broken = [], {}
    for path in sorted((TESTS / "tests" / "pipelines").glob("*/test_*.py")):
        module = ".".join(path.relative_to(TESTS).with_suffix("").parts)
        try:
            mod = importlib.import_module(module)
        except Exception as e:  # noqa: BLE001 - a fixture module that cannot load here is reported, not fatal
            broken[module] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
            continue
        seen = set()
        for name, cls in vars(mod).items():
            if (inspect.isclass(cls) and cls.__module__ == module and "get_dummy_components" in dir(cls)
                    and isinstance(getattr(cls, "pipeline_class", None), type) and builds_alone(cls)):
                key = (cls.pipeline_class, cls.get_dummy_components.__qualname__, cls.get_dummy_inputs.__qualname__)
                if key not in seen:  # subclasses that only add tests build the same fixture
                    seen.add(key)
                    found.append(Fixture(module, name))
    return found, broken


def tester(fixture: Fixture):
    """An instance of the fixture's test class (unittest classes need a method name)."""
    cls = getattr(importlib.import_module(fixture.module), fixture.name)
    return cls() if not issubclass(cls, unittest.TestCase) else cls("__init__")


def seed_everything(seed: int = 0) -> None:
    """Seed the global RNGs a few fixtures draw their inputs (or a pipeline its noise) from."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def dummy_inputs(fixture: Fixture, test=None) -> dict:
    """Fresh call kwargs of a fixture (a new seeded generator each call, so runs can be compared)."""
    test = test or tester(fixture)
    seed_everything()
    signature = inspect.signature(test.get_dummy_inputs)
    if "device" in signature.parameters:
        return test.get_dummy_inputs("cpu", **({"seed": 0} if "seed" in signature.parameters else {}))
    return test.get_dummy_inputs()


def build(fixture: Fixture):
    """(pipeline, call kwargs) of a fixture, on the CPU."""
    test = tester(fixture)
    seed_everything()
    components = test.get_dummy_components()
    pipe = type(test).pipeline_class(**components)
    pipe.to("cpu")
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)
    if hasattr(test, "get_dummy_inversion_inputs") and hasattr(pipe, "invert"):  # LEDITS++ edits an inverted image
        seed_everything()
        pipe.invert(**test.get_dummy_inversion_inputs("cpu"))
    return pipe, dummy_inputs(fixture, test)
