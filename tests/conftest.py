from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture
def shared() -> Path:
    """../shared beside the checkout (teachers, peers, data); tests needing it skip without it."""
    if not (SHARED / "models" / "teachers").is_dir():
        pytest.skip(f"needs ../shared (looked in {SHARED})")
    return SHARED
