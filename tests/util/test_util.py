"""shedkit.util: atomic writes, "did you mean" lookups, canonical hashing, progress bars, lazy attributes."""

import hashlib
import json
import sys

import numpy as np
import pytest

from shedkit.errors import ShedkitError
from shedkit.util.atomic import atomic_path, atomic_save_npy, atomic_write_json, atomic_write_text
from shedkit.util.hashing import canonical_json, stable_hash
from shedkit.util.progress import progress_bar, track
from shedkit.util.registry import close_match, did_you_mean, lazy_attributes, lookup, unknown_name


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    path = tmp_path / "sub" / "a.json"
    atomic_write_json(path, {"x": float("nan"), "y": np.float32(1.5), "z": [1, float("inf")]})
    assert json.loads(path.read_text()) == {"x": None, "y": 1.5, "z": [1, None]}
    atomic_write_text(path, "second\n")
    assert path.read_text() == "second\n"
    assert [p.name for p in path.parent.iterdir()] == ["a.json"]


def test_atomic_write_failure_keeps_the_old_file(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_save_npy_round_trips(tmp_path):
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    atomic_save_npy(tmp_path / "a.npy", array)
    assert np.array_equal(np.load(tmp_path / "a.npy", allow_pickle=False), array)


def test_registry_lookup_and_hints():
    table = {"random": 1, "dsir": 2, "shed-qocs": 3}
    assert lookup(table, "dsir", "method") == 2
    with pytest.raises(ShedkitError, match=r"unknown method 'randon' \(did you mean 'random'\?\); choose one of: random, dsir, shed-qocs"):
        lookup(table, "randon", "method")
    assert close_match("shed-qcos", table) == "shed-qocs" and close_match("zzz", table) is None
    assert did_you_mean("zzz", table) == "" and "did you mean" not in str(unknown_name("method", "zzz", table))


def test_stable_hash_is_sha256_of_canonical_json():
    obj = {"b": [1, 2.5, "x"], "a": {"d": None, "c": True}}
    text = canonical_json(obj)
    assert text == '{"a":{"c":true,"d":null},"b":[1,2.5,"x"]}'
    assert stable_hash(obj, None) == hashlib.sha256(text.encode()).hexdigest()
    assert stable_hash(obj) == stable_hash({"a": {"c": True, "d": None}, "b": [1, 2.5, "x"]}) and len(stable_hash(obj)) == 32
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


def test_the_two_hash_helpers_agree():
    """execute.jobs and models.config hash through the one helper: keys stay as they were."""
    from shedkit.execute.jobs import Job, hash_settings
    from shedkit.models.config import stable_hash as model_hash

    settings = {"model": "tiny-random", "seed": 0}
    assert hash_settings(settings) == model_hash(settings) == hashlib.sha256(canonical_json(settings).encode()).hexdigest()[:32]
    job = Job.of(["b", "a"], "h")
    assert job.key == hashlib.sha256(canonical_json(["h", ["a", "b"]]).encode()).hexdigest()


@pytest.mark.parametrize("enabled", [False, True])
def test_progress_bar_counts_and_track_yields_everything(enabled):
    with progress_bar(3, "test", enabled=enabled, transient=True) as advance:
        for _ in range(3):
            advance(1)
    assert list(track(iter(range(5)), "test", enabled=enabled)) == list(range(5))


def test_lazy_attributes_import_on_first_use():
    getter = lazy_attributes("shedkit.util", {"stable_hash": "hashing"})
    assert getter("stable_hash") is stable_hash
    assert sys.modules["shedkit.util"].__dict__["stable_hash"] is stable_hash  # cached on the package
    with pytest.raises(AttributeError):
        getter("nope")


def test_peak_rss_grows_with_a_large_allocation():
    """In a fresh process: the high-water mark of this one may already sit above any new block."""
    import subprocess
    import sys

    code = ("from shedkit.util.memory import peak_rss_mb\n"
            "before = peak_rss_mb()\n"
            "block = bytearray(64 * 2**20)\n"
            "block[::4096] = b'x' * len(block[::4096])  # touch every page so it is resident\n"
            "print(before, peak_rss_mb())\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    before, after = map(float, out)
    assert before > 0 and after >= before + 60
