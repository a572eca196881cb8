import os
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from shared_data import SHARED, shared_path  # noqa: F401  (re-exported for tests)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets a fresh shedkit cache, so nothing leaks between tests or from ~/.cache."""
    if "SHEDKIT_TEST_KEEP_CACHE" not in os.environ:
        monkeypatch.setenv("SHEDKIT_CACHE", str(tmp_path_factory.mktemp("shedkit-cache")))
