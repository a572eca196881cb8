"""--dry-run for every method (issue 24.4): the stages with their work, estimated seconds here
(a timed sample) and on a named GPU (from FLOPs), and memory; work/dry_run.json written, no
selection. Tiny model, fp32 pinned; the 30% check against real SmolLM2 runs is the benchmark's."""

import json

import pytest

import shedkit
from shedkit.data.synthetic import write_demo_data
from shedkit.errors import ShedkitError
from shedkit.pipeline.planning import GPUS, forward_flops, gpu_seconds, train_flops
from shedkit.value.planning import DryRunFinished

MODEL = dict(model="tiny-random", max_length=64, precision="fp32", progress=False)
HASHED = dict(embedder="hashed-ngrams")
OUTPUTS = ("pool.jsonl", "scores.csv", "manifest.json", "report.html")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_demo_data(tmp_path_factory.mktemp("dry-run-data"), n=48, seed=4, dev_rows=6)


def _target(data):
    return dict(target=[data["target_dev"]])


# method, its options, the stages its plan must name (load_pool first and write last, always)
CASES = {
    "random": (lambda d: {}, ["select"]),
    "full": (lambda d: {}, ["select"]),
    "dsir": (_target, ["load_targets", "dsir_weights"]),
    "dq": (lambda d: dict(HASHED, bins=3), ["embed", "graphcut_bins", "select"]),
    "lowest-loss": (lambda d: MODEL, ["load_model", "base_losses", "select"]),
    "ifd": (lambda d: MODEL, ["load_model", "base_losses", "response_alone_losses", "select"]),
    "filtered-random": (lambda d: MODEL, ["load_model", "base_losses", "response_alone_losses", "select"]),
    "auto": (lambda d: MODEL, ["load_model", "base_losses", "response_alone_losses", "select"]),
    "lobass": (lambda d: MODEL, ["load_model", "base_losses", "reference_fine_tune", "reference_losses", "select"]),
    "first-order": (lambda d: dict(MODEL, **_target(d)),
                    ["load_model", "warmup_fine_tune", "dev_gradients", "row_gradients", "select"]),
    "first-order-less": (lambda d: dict(MODEL, fo_normalize="less", **_target(d)),
                         ["load_model", "warmup_fine_tune", "dev_gradients", "target_directions", "center_gradients",
                          "row_gradients", "select"]),
    "shed-qocs": (lambda d: dict(MODEL, **HASHED, clusters=4, permutations=1, **_target(d)),
                  ["embed", "kmeans", "load_model", "proxy_fine_tunes", "sample"]),
    "shed-qwcs": (lambda d: dict(MODEL, **HASHED, clusters=4, cluster_value="first-order", **_target(d)),
                  ["embed", "kmeans", "load_model", "warmup_fine_tune", "dev_gradients", "row_gradients", "sample"]),
    "shed-hybrid": (lambda d: dict(MODEL, **HASHED, clusters=4, permutations=1, row_score="loss-ifd", **_target(d)),
                    ["embed", "kmeans", "load_model", "proxy_fine_tunes", "base_losses", "response_alone_losses",
                     "sample"]),
}


def dry_run(pool, tmp_path, method, **options):
    with pytest.raises(DryRunFinished) as info:
        shedkit.select(pool, method=method, budget=8, out=tmp_path / "o", cache_dir=tmp_path / "cache",
                       dry_run=True, **options)
    return info.value.plan


@pytest.mark.parametrize("case", list(CASES))
def test_every_method_plans_its_stages_and_selects_nothing(case, data, tmp_path, one_torch_thread):
    options, stages = CASES[case]
    method = case.removesuffix("-less")
    plan = dry_run(data["pool"], tmp_path, method, **options(data))
    written = json.loads((tmp_path / "o" / "work" / "dry_run.json").read_text())
    assert written["method"] == method and written["pool_rows"] == 48
    assert [s["name"] for s in written["stages"]] == ["load_pool", *stages, "write"]
    for s in written["stages"]:
        assert s["seconds"] > 0 and s["gpu_seconds"] > 0 and s["memory_gb"] > 0, s
        assert s["seconds_from"] and s["memory_from"] and s["gpu_from"], s
        assert (s["flops"] is None) == s["gpu_from"].startswith("no model work"), s
    model_stages = [s for s in written["stages"] if s["flops"] is not None]
    assert all("FLOPs/GPU table" in s["gpu_from"] for s in model_stages)
    assert written["total"]["seconds"] == pytest.approx(sum(s["seconds"] for s in written["stages"]))
    assert written["gpu"]["name"] == "H100-SXM" and written["gpu"]["utilisation"] == 0.35
    assert plan["summary"] == written["summary"]
    assert not any((tmp_path / "o" / name).exists() for name in OUTPUTS)


def test_the_gpu_seconds_of_known_flops():
    # SmolLM2-135M scoring 1M tokens: 2 * 135e6 * 1e6 FLOPs; a LoRA step over them: 6 * 135e6 * 1e6
    assert forward_flops(135e6, 1e6) == 2.7e14 and train_flops(135e6, 1e6) == 8.1e14
    assert gpu_seconds(2.7e14, "H100-SXM", 0.35) == pytest.approx(2.7e14 / (989e12 * 0.35))  # 0.78 s
    assert gpu_seconds(8.1e14, "A100-80GB", 0.5) == pytest.approx(8.1e14 / 156e12)  # 5.19 s
    assert gpu_seconds(1.21e14, "L4", 1.0) == pytest.approx(1.0)
    assert GPUS["H200"] == GPUS["H100-SXM"] == 989e12
    with pytest.raises(ShedkitError, match="did you mean 'H100-SXM'"):
        gpu_seconds(1.0, "H100-SMX")


def test_the_named_gpu_sets_the_gpu_column(data, tmp_path, one_torch_thread):
    plan = dry_run(data["pool"], tmp_path, "lowest-loss", dry_run_gpu="L4", **MODEL)
    scoring = next(s for s in plan["stages"] if s["name"] == "base_losses")
    assert plan["gpu"]["name"] == "L4"
    assert scoring["gpu_seconds"] == pytest.approx(scoring["flops"] / (121e12 * 0.35))
    assert scoring["flops"] == pytest.approx(2 * plan["stages"][1]["units"]["params"] * scoring["units"]["tokens"])


def _pool(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_pool_twice_as_long_takes_about_twice_as_long(tmp_path_factory, tmp_path, one_torch_thread):
    # 120 rows: the timed sample (two batches of 16 rows of like length) is then made of rows
    # as alike in length as the doubled pool's, so the estimates differ by the work alone
    paths = write_demo_data(tmp_path_factory.mktemp("dry-run-twice"), n=120, seed=4, dev_rows=4)
    rows = [json.loads(line) for line in paths["pool"].read_text().splitlines()]
    # the same rows again under new ids (one character differs, the lengths do not)
    once = _pool(tmp_path / "once.jsonl", [{**r, "instruction": r["instruction"] + " a"} for r in rows])
    twice = _pool(tmp_path / "twice.jsonl", [{**r, "instruction": r["instruction"] + s} for s in (" a", " b")
                                             for r in rows])

    def model_work(pool, where):
        # the least of three plans: each times a sub-second sample, which a busy machine can
        # stretch several-fold once (seen under load 3: a 4x ratio)
        runs = []
        for k in range(3):
            plan = dry_run(pool, tmp_path / f"{where}{k}", "filtered-random", **MODEL)
            stages = [s for s in plan["stages"] if s["name"] in ("base_losses", "response_alone_losses")]
            runs.append((sum(s["seconds"] for s in stages), sum(s["units"]["tokens"] for s in stages)))
        assert len({t for _, t in runs}) == 1
        return min(s for s, _ in runs), runs[0][1]

    seconds_1, tokens_1 = model_work(once, "a")
    seconds_2, tokens_2 = model_work(twice, "b")
    assert tokens_2 == 2 * tokens_1
    assert 0.7 * 2 < seconds_2 / seconds_1 < 1.3 * 2


def test_the_loss_estimate_is_near_the_measured_scoring(tmp_path_factory, tmp_path, one_torch_thread):
    paths = write_demo_data(tmp_path_factory.mktemp("dry-run-scoring"), n=480, seed=5, dev_rows=4)
    plan = dry_run(paths["pool"], tmp_path, "lowest-loss", **MODEL)
    estimate = next(s["seconds"] for s in plan["stages"] if s["name"] == "base_losses")
    run = shedkit.select(paths["pool"], method="lowest-loss", budget=8, out=tmp_path / "o",
                         cache_dir=tmp_path / "cache", **MODEL)
    actual = run.manifest["method_timings"]["base_losses"]
    assert run.manifest["method"]["base_losses"]["computed"] == 480  # the dry run filled no cache
    assert 0.5 < estimate / actual < 2.0, (estimate, actual)


def test_cli_dry_run_prints_the_stage_table(data, tmp_path, capsys, one_torch_thread):
    from shedkit.cli.main import main

    code = main(["select", str(data["pool"]), "--method", "filtered-random", "--dry-run", "--model", "tiny-random",
                 "--max-length", "64", "--precision", "fp32", "--no-progress", "--budget", "8",
                 "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert code == 0
    for text in ("stage", "this machine", "H100-SXM", "memory", "load_model", "base_losses",
                 "response_alone_losses", "total", "timed", "FLOPs/GPU table", "dry run of filtered-random"):
        assert text in err, text
    assert (tmp_path / "o" / "work" / "dry_run.json").exists()
    assert not any((tmp_path / "o" / name).exists() for name in OUTPUTS)


@pytest.mark.parametrize("method", ["random", "dsir", "dq"])
def test_a_model_free_plan_does_not_import_torch(method, data, tmp_path):
    """random, dsir and dq with the hashed embedder plan without torch: its import (1.5 s, ~300 MB)
    is not paid for a machine description (checked in a fresh interpreter)."""
    import subprocess
    import sys

    options = {k: [str(x) for x in v] if isinstance(v, list) else v for k, v in CASES[method][0](data).items()}
    code = (
        "import sys, shedkit\n"
        "from shedkit.value.planning import DryRunFinished\n"
        f"try: shedkit.select({str(data['pool'])!r}, method={method!r}, budget=8, out={str(tmp_path / 'o')!r}, "
        f"dry_run=True, progress=False, **{options!r})\n"
        "except DryRunFinished as e: plan = e.plan\n"
        "assert plan['machine']['cpus'] >= 1\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_the_embedding_size_is_read_by_the_new_name_where_there_is_one():
    # sentence-transformers 6 renamed get_sentence_embedding_dimension (the old name warns there).
    from shedkit.pipeline.plan_data import _st_dim

    class New:
        def get_embedding_dimension(self):
            return 768

        def get_sentence_embedding_dimension(self):
            raise AssertionError("the old name was called")

    class Old:
        def get_sentence_embedding_dimension(self):
            return 384

    assert _st_dim(New()) == 768 and _st_dim(Old()) == 384


@pytest.mark.slow
def test_the_embedding_is_timed_in_the_runs_own_batches(tmp_path_factory, tmp_path, one_torch_thread):
    """The sample is two of the run's batches (at least 64 rows), spread over the lengths, timed
    at the run's batch size: timed in batches of 16 it said 461 s for a 30k-row dq run of 620 s
    in batches of 64 (a CPU runs MiniLM ~18% faster per token in small batches)."""
    pytest.importorskip("sentence_transformers")
    paths = write_demo_data(tmp_path_factory.mktemp("dry-run-embed"), n=200, seed=4, dev_rows=4)
    for batch, rows in ((48, 96), (8, 64)):
        plan = dry_run(paths["pool"], tmp_path / str(batch), "dq", bins=3, embed_batch_size=batch,
                       progress=False)
        embed = next(s for s in plan["stages"] if s["name"] == "embed")
        assert f"timed {rows} rows in batches of {batch} " in embed["seconds_from"], embed["seconds_from"]
        assert f"batches of {batch})" in embed["seconds_from"]


def test_a_dry_run_after_a_run_plans_no_scoring_the_cache_holds(data, tmp_path, one_torch_thread):
    """The plan reads the loss cache under the run's own keys, for the base losses and for IFD's
    responses-alone pass (one key builder for both), so after a run nothing is left to score."""
    shedkit.select(data["pool"], method="filtered-random", budget=8, out=tmp_path / "run",
                   cache_dir=tmp_path / "cache", **MODEL)
    plan = dry_run(data["pool"], tmp_path, "filtered-random", **MODEL)
    stages = {s["name"]: s["units"] for s in plan["stages"]}
    for name in ("base_losses", "response_alone_losses"):
        assert stages[name]["rows"] == 0 and stages[name]["cached_rows"] > 0, (name, stages[name])
