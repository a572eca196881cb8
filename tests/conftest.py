import os
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from shared_data import SHARED, shared_path  # noqa: F401  (re-exported for tests)


@pytest.fixture(scope="session")
def one_torch_thread():
    """The tiny model's matmuls are too small to gain from threads, and on a shared 2-core
    machine OpenMP threads that wait on each other make them up to 10x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def _converted_models(tmp_path_factory):
    return tmp_path_factory.mktemp("shedkit-models")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch, _converted_models):
    """Every test gets a fresh shedkit cache, so nothing leaks between tests or from ~/.cache.

    Only converted base models (content-keyed, e.g. SmolLM2's GGUF -> safetensors copy, ~45 s to
    make) are shared across the session through a link, so the conversion happens once."""
    if "SHEDKIT_TEST_KEEP_CACHE" not in os.environ:
        cache = tmp_path_factory.mktemp("shedkit-cache")
        (cache / "models").symlink_to(_converted_models, target_is_directory=True)
        monkeypatch.setenv("SHEDKIT_CACHE", str(cache))
