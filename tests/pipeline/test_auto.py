"""--method auto: the recommended preset runs its method with the preset's fixed settings, says
so in the manifest, and refuses options that would change which rows it keeps."""

import json

import pytest

import shedkit
from shedkit.data.synthetic import write_demo_data

SCORING = dict(model="tiny-random", max_length=64, precision="fp32", progress=False)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return write_demo_data(tmp_path_factory.mktemp("auto-data"), n=40, seed=2, dev_rows=4)["pool"]


def test_recommended_v1_is_frozen():
    """A committed preset never changes (its results on noisy-mix-v2 were pre-registered at the
    commit that made it): a new choice is a new preset, and auto may point at it."""
    from shedkit.pipeline.methods.auto import AUTO, PRESETS

    v1 = PRESETS["recommended-v1"]
    assert (v1.method, v1.settings, v1.chosen_on) == ("filtered-random", {"filter_keep": 0.75}, "noisy-mix-v1")
    assert AUTO in PRESETS


@pytest.mark.parametrize("seed", [0, 5])
def test_auto_selects_what_its_preset_selects(tmp_path, pool, seed):
    cache = tmp_path / "cache"
    auto = shedkit.select(pool, method="auto", budget=8, seed=seed, cache_dir=cache, out=tmp_path / "auto", **SCORING)
    named = shedkit.select(pool, method="recommended-v1", budget=8, seed=seed, cache_dir=cache, **SCORING)
    plain = shedkit.select(pool, method="filtered-random", filter_keep=0.75, budget=8, seed=seed, cache_dir=cache,
                           **SCORING)
    other = shedkit.select(pool, method="filtered-random", filter_keep=0.3, budget=8, seed=seed, cache_dir=cache,
                           **SCORING)
    assert auto.rows == named.rows == plain.rows and len(auto.rows) == 8
    assert other.rows != auto.rows  # the setting matters, so the equality above is the preset's
    manifest = json.loads((tmp_path / "auto" / "manifest.json").read_text())
    preset = manifest["method"]["preset"]
    assert preset["asked"] == "auto" and preset["name"] == "recommended-v1"
    assert preset["method"] == "filtered-random" and preset["settings"] == {"filter_keep": 0.75}
    assert manifest["method"]["filter_keep"] == 0.75 and manifest["method"]["passed"] == 30  # ceil(0.75 * 40)
    assert "filter_score" in auto.scores.columns


@pytest.mark.parametrize("option, owner", [("filter_keep", "filtered-random"), ("target", "first-order")])
def test_auto_refuses_options_that_change_its_choice(tmp_path, pool, option, owner):
    with pytest.raises(shedkit.ShedkitError, match=f"not used by --method auto.*{owner}"):
        shedkit.select(pool, method="auto", budget=8, out=tmp_path / "o", **{option: 0.5}, **SCORING)
    assert not (tmp_path / "o").exists()
