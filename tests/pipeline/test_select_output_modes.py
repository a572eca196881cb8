"""On a shared machine a run's outputs follow the user's umask (as a plain open() would)."""

import pytest

import shedkit
from helpers import mode_of, umask_setter
from shedkit.data.synthetic import write_demo_data

umask = pytest.fixture(umask_setter)
MASKS = [pytest.param(0o022, 0o644, 0o755, id="umask022"), pytest.param(0o077, 0o600, 0o700, id="umask077")]
OUTPUTS = ("subset.jsonl", "scores.csv", "manifest.json", "report.html")


@pytest.mark.parametrize("mask,file_mode,dir_mode", MASKS)
def test_select_outputs_follow_the_umask(umask, tmp_path, mask, file_mode, dir_mode):
    umask(mask)
    pool = write_demo_data(tmp_path / "data", n=40, seed=1)["pool"]
    assert mode_of(pool) == file_mode
    out = tmp_path / "run"
    shedkit.select(pool, method="random", budget=5, out=out)
    assert mode_of(out) == dir_mode
    files = {p.name: mode_of(p) for p in out.rglob("*") if p.is_file()}
    assert set(OUTPUTS) <= set(files)
    assert files == {name: file_mode for name in files}  # every output, not just the four named
