"""Subsets in every container are published with the user's umask, not the temp file's 0600."""

import os

import pytest
from test_roundtrip import ROWS, write_container

from helpers import mode_of, umask_setter
from shedkit.data import load_pool
from shedkit.data.containers import write_subset

umask = pytest.fixture(umask_setter)
MASKS = [pytest.param(0o022, 0o644, 0o755, id="umask022"), pytest.param(0o077, 0o600, 0o700, id="umask077")]


@pytest.mark.parametrize("mask,file_mode,dir_mode", MASKS)
@pytest.mark.parametrize("container", ["jsonl", "json", "csv", "parquet", "hf"])
def test_subset_gets_umask_modes(umask, tmp_path, container, mask, file_mode, dir_mode):
    ext = "" if container == "hf" else "." + container
    src = write_container(ROWS["alpaca"], tmp_path / f"pool{ext}", container)
    pool = load_pool(src)
    umask(mask)
    out = tmp_path / "run" / f"subset{ext}"
    for _ in range(2):  # a new output, then one written over
        write_subset(pool.table, [0, 2], out)
        if container == "hf":
            assert mode_of(out) == dir_mode
            for root, dirs, files in os.walk(out):
                assert all(mode_of(os.path.join(root, d)) == dir_mode for d in dirs)
                assert files and all(mode_of(os.path.join(root, f)) == file_mode for f in files)
        else:
            assert mode_of(out) == file_mode
        assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no temp left behind
