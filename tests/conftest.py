import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test with the reason when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: the public benchmark data lives in ../shared beside the checkout")
    return path


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets a fresh shedkit cache, so nothing leaks between tests or from ~/.cache."""
    if "SHEDKIT_TEST_KEEP_CACHE" not in os.environ:
        monkeypatch.setenv("SHEDKIT_CACHE", str(tmp_path_factory.mktemp("shedkit-cache")))
