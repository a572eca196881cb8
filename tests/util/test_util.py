"""shedkit.util: atomic writes, "did you mean" lookups, canonical hashing, progress bars, lazy attributes."""

import hashlib
import json
import os
import sys

import numpy as np
import pytest

from shedkit.errors import ShedkitError
from helpers import mode_of, umask_setter
from shedkit.util import atomic
from shedkit.util.atomic import (
    atomic_dir, atomic_path, atomic_save_npy, atomic_write_bytes, atomic_write_json, atomic_write_text,
    current_umask, default_mode, publish_mode,
)
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


umask = pytest.fixture(umask_setter)
MASKS = [pytest.param(0o022, 0o644, 0o755, id="umask022"), pytest.param(0o077, 0o600, 0o700, id="umask077")]

# every public atomic writer, as (name, write(path)): each must publish a plain open()'s mode
WRITERS = [
    ("bytes", lambda p: atomic_write_bytes(p, b"x")),
    ("text", lambda p: atomic_write_text(p, "x")),
    ("json", lambda p: atomic_write_json(p, {"x": 1})),
    ("npy", lambda p: atomic_save_npy(p, np.zeros(2))),
]


def _via_atomic_path(p):
    with atomic_path(p) as tmp:
        tmp.write_text("x")


WRITERS.append(("atomic_path", _via_atomic_path))


@pytest.mark.parametrize("mask,file_mode,dir_mode", MASKS + [pytest.param(0o002, 0o664, 0o775, id="umask002")])
@pytest.mark.parametrize("name,write", WRITERS, ids=[w[0] for w in WRITERS])
def test_atomic_writes_get_the_mode_a_plain_open_gives(umask, tmp_path, mask, file_mode, dir_mode, name, write):
    umask(mask)
    plain = tmp_path / "plain"
    plain.write_text("x")
    target = tmp_path / "new" / "out.bin"
    write(target)
    assert mode_of(target) == mode_of(plain) == file_mode == default_mode()
    assert mode_of(target.parent) == dir_mode  # parents: plain mkdir
    target.chmod(0o600)  # written private by an older version: a rewrite publishes the umask mode
    write(target)
    assert mode_of(target) == file_mode and [p.name for p in target.parent.iterdir()] == ["out.bin"]


@pytest.mark.parametrize("mask,file_mode,dir_mode", MASKS)
def test_atomic_dir_publishes_mkdir_and_open_modes_for_the_whole_tree(umask, tmp_path, mask, file_mode, dir_mode):
    umask(mask)
    out = tmp_path / "model"
    with atomic_dir(out) as tmp:
        assert mode_of(tmp) == 0o700  # private while it is written
        (tmp / "sub").mkdir(mode=0o700)
        (tmp / "sub" / "weights.safetensors").write_bytes(b"w")
        (tmp / "sub" / "weights.safetensors").chmod(0o600)  # as safetensors leaves its files
        (tmp / "link").symlink_to("sub/weights.safetensors")
    assert mode_of(out) == mode_of(out / "sub") == dir_mode
    assert mode_of(out / "sub" / "weights.safetensors") == file_mode
    assert (out / "link").is_symlink()
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_failed_atomic_writes_still_clean_up_under_a_umask(umask, tmp_path):
    umask(0o022)
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "f").write_text("half")
            raise RuntimeError("crash")
    (tmp_path / "a.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "a.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"] and (tmp_path / "a.txt").read_text() == "old"


def test_publish_mode_leaves_symlinks_and_missing_paths_alone(umask, tmp_path):
    umask(0o022)
    target = tmp_path / "t"
    target.write_text("x")
    target.chmod(0o600)
    (tmp_path / "l").symlink_to(target)
    publish_mode(tmp_path / "l")
    publish_mode(tmp_path / "missing")
    assert mode_of(target) == 0o600
    publish_mode(target)
    assert mode_of(target) == 0o644


def test_umask_is_read_without_changing_it_and_cached(umask, monkeypatch):
    umask(0o027)
    assert current_umask() == 0o027 and default_mode() == 0o640 and default_mode(directory=True) == 0o750
    os.umask(0o022)  # changed behind shedkit's back: the cached value stands until a refresh
    assert current_umask() == 0o027
    assert current_umask(refresh=True) == 0o022

    def no_proc(*args, **kwargs):
        raise OSError("no /proc")

    monkeypatch.setattr(atomic, "open", no_proc, raising=False)  # not Linux: the os.umask fallback
    os.umask(0o007)
    assert current_umask(refresh=True) == 0o007
    assert os.umask(0o007) == 0o007  # ...which leaves the process umask as it was


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
