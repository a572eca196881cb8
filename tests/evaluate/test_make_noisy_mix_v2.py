"""bench/suites/make_noisy_mix_v2.py: the noisy-mix-v2 suite it writes from ../shared (counts,
labels, disjoint targets, each corruption kind as documented, shedkit reads it, seeded bytes)."""

import importlib.util
import json
import os
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
SCRIPT = REPO / "bench" / "suites" / "make_noisy_mix_v2.py"
V1 = SHARED / "bench" / "noisy-mix-v1"

POOL_SOURCES = {"alpaca": 1200, "lima": 650, "gsm8k": 850, "sharegpt": 300}
LABELS = {"clean": 2310, "wrong_step": 120, "swapped": 150, "near_duplicate": 150, "off_topic": 150, "refusal": 120}
TARGETS = {"alpaca_dev": 100, "alpaca_test": 200, "lima_dev": 50, "lima_test": 150, "gsm8k_dev": 100,
           "gsm8k_test": 200, "mixed_dev": 100, "arc_easy_dev": 100, "arc_easy_test": 300}


def _need_shared():
    if not (SHARED / "data").is_dir() or not V1.is_dir():
        pytest.skip(f"../shared/data not found ({SHARED}): the public benchmark data lives in ../shared beside the checkout")


def _run(out: Path, seed: int, hashseed: str) -> None:
    env = {**os.environ, "PYTHONHASHSEED": hashseed}  # set order must never reach the output
    subprocess.run([sys.executable, str(SCRIPT), str(out), "--seed", str(seed), "--shared", str(SHARED)],
                   check=True, env=env, capture_output=True, text=True, timeout=120)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def gen():
    spec = importlib.util.spec_from_file_location("make_noisy_mix_v2", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    _need_shared()
    out = tmp_path_factory.mktemp("noisy-mix-v2") / "suite"
    _run(out, 0, "1")
    return out


@pytest.fixture(scope="module")
def built(suite):
    pool = _jsonl(suite / "pool.jsonl")
    labels = _jsonl(suite / "pool_labels.jsonl")
    meta = json.loads((suite / "meta.json").read_text())
    return pool, labels, meta


@pytest.fixture(scope="module")
def originals():
    """source -> raw instruction -> original output (first of equal instructions, as the script)."""
    _need_shared()
    data = SHARED / "data"
    out = {"alpaca": {}, "lima": {}, "gsm8k": {}}
    for r in json.loads((data / "alpaca" / "alpaca_data_random_5k.json").read_text()):
        out["alpaca"].setdefault(r["instruction"], r["output"])
    for r in json.loads((data / "lima" / "lima.json").read_text()):
        out["lima"].setdefault(r["instruction"], r["output"])
    for r in _jsonl(data / "gsm8k" / "train.jsonl"):
        out["gsm8k"].setdefault(r["question"], r["answer"])
    return out


def test_counts_labels_and_meta(suite, built):
    pool, labels, meta = built
    assert len(pool) == 3000 == meta["pool_rows"]
    assert [r["line"] for r in labels] == list(range(3000))
    counts = Counter(r["label"] for r in labels)
    assert counts == Counter(LABELS) == Counter({k: v for k, v in meta["labels"].items() if v})
    assert Counter(r["source"] for r in labels) == Counter(POOL_SOURCES) == Counter(meta["sources"])
    by_source = defaultdict(Counter)
    for r in labels:
        by_source[r["source"]][r["label"]] += 1
    assert by_source["gsm8k"]["wrong_step"] == 120 and by_source["sharegpt"] == Counter(clean=300)
    assert {s for s, c in by_source.items() if c["swapped"]} <= {"alpaca", "gsm8k"}
    assert {s for s, c in by_source.items() if c["off_topic"]} <= {"alpaca", "lima"}
    assert {s: dict(c) for s, c in by_source.items()} == {s: {k: v for k, v in c.items()} for s, c in meta["labels_by_source"].items()}
    # the flood: 3 groups, each the seed row (clean) plus 50 near-duplicates, all alpaca
    groups = defaultdict(list)
    for r in labels:
        if str(r.get("group", "")).startswith("flood-"):
            groups[r["group"]].append(r)
    assert sorted(groups) == ["flood-0", "flood-1", "flood-2"]
    for rows in groups.values():
        assert Counter(r["label"] for r in rows) == Counter(clean=1, near_duplicate=50)
        assert {r["source"] for r in rows} == {"alpaca"}
    assert all(r.get("group", "").startswith("flood-") for r in labels if r["label"] == "near_duplicate")
    # targets on disk as meta says; the mixed test is derived, not a file
    assert meta["targets"] == {f"target_{k}": v for k, v in TARGETS.items()}
    for name, n in TARGETS.items():
        assert len(_jsonl(suite / f"target_{name}.jsonl")) == n
    assert not (suite / "target_mixed_test.jsonl").exists()
    assert meta["mixed_test"] == ["alpaca", "lima", "gsm8k"]
    assert meta["name"] == "noisy-mix-v2" and meta["seed"] == 0 and meta["script"] == "bench/suites/make_noisy_mix_v2.py"
    assert all(v == 0 for v in meta["v1_overlap"]["pool"].values())
    assert all(v == 0 for k, v in meta["v1_overlap"]["targets"].items() if "arc_easy" not in k)


def test_targets_disjoint_from_pool_each_other_and_v1(suite, built, gen):
    pool, _, _ = built
    norm = gen.norm
    pool_keys = {norm(r["instruction"]) for r in pool}
    v1 = {norm(r["instruction"]) for p in V1.glob("*.jsonl") for r in _jsonl(p) if "instruction" in r}
    keys = {}
    for name in TARGETS:
        rows = _jsonl(suite / f"target_{name}.jsonl")
        if name.startswith("arc_easy"):
            assert all(set(r) == {"query", "choices", "gold"} for r in rows)
            keys[name] = [norm(r["query"]) for r in rows]
            continue
        assert all(set(r) <= {"instruction", "input", "output", "history"} and r["output"].strip() for r in rows)
        keys[name] = [norm(r["instruction"]) for r in rows]
        assert len(set(keys[name])) == len(rows), name
        assert not set(keys[name]) & pool_keys, f"{name} shares an instruction with the pool"
        assert not set(keys[name]) & v1, f"{name} shares an instruction with noisy-mix-v1"
    assert not pool_keys & v1
    separate = [k for k in keys if k != "mixed_dev"]
    for i, a in enumerate(separate):
        for b in separate[i + 1:]:
            assert not set(keys[a]) & set(keys[b]), f"{a} and {b} overlap"
    mixed = Counter()
    for k in keys["mixed_dev"]:
        [src] = [s for s in ("alpaca", "lima", "gsm8k") if k in set(keys[f"{s}_dev"])]
        mixed[src] += 1
    assert mixed == Counter(alpaca=40, lima=30, gsm8k=30)
    arc = set((SHARED / "data" / "eval" / "arc_easy.jsonl").read_text().splitlines())
    for name in ("arc_easy_dev", "arc_easy_test"):  # copied as they are
        assert set((suite / f"target_{name}.jsonl").read_text().splitlines()) <= arc


def test_wrong_step_rows(built, gen, originals):
    pool, labels, _ = built
    rows = [p for p, lab in zip(pool, labels) if lab["label"] == "wrong_step"]
    assert len(rows) == 120
    for row in rows:
        original = originals["gsm8k"][row["instruction"]]
        assert gen.final_answer(row["output"]) is not None
        assert gen.final_answer(row["output"]) != gen.final_answer(original)
        annotations = gen.ANNOTATION.findall(row["output"])
        assert annotations
        for expr, result in annotations:
            assert gen.safe_eval(expr) == gen.parse_number(result), (expr, result)
        # one step changed: the lines before it are the original's
        old, new = original.split("\n"), row["output"].split("\n")
        assert len(old) == len(new)
        first = next(i for i, (a, b) in enumerate(zip(old, new)) if a != b)
        assert first >= len(new) - 3


def test_safe_eval(gen):
    from fractions import Fraction

    assert gen.safe_eval("5*20") == 100
    assert gen.safe_eval("(2+3)*4-6/4") == Fraction(37, 2)
    assert gen.safe_eval("-3+ +2") == -1
    for bad in ("__import__('os')", "2**8", "1/0", "3 % 2", "(1+2", "1+", "1,000*2"):
        with pytest.raises(ValueError):
            gen.safe_eval(bad)


def test_swapped_and_other_labels(built, originals):
    pool, labels, _ = built
    pairs = defaultdict(list)
    for i, lab in enumerate(labels):
        if lab["label"] == "swapped":
            pairs[lab["group"]].append(i)
    assert len(pairs) == 75 and all(len(v) == 2 for v in pairs.values())
    for a, b in pairs.values():
        src = labels[a]["source"]
        assert src == labels[b]["source"] and src in ("alpaca", "gsm8k")
        orig = originals[src]
        assert pool[a]["output"] == orig[pool[b]["instruction"]] != orig[pool[a]["instruction"]]
        assert pool[b]["output"] == orig[pool[a]["instruction"]]
    outputs = {s: set(o.values()) for s, o in originals.items()}
    seeds = {lab["group"]: pool[i] for i, lab in enumerate(labels)
             if lab["label"] == "clean" and lab.get("group", "").startswith("flood-")}
    for row, lab in zip(pool, labels):
        src = lab["source"]
        if lab["label"] == "clean" and src != "sharegpt":
            assert row["output"] == originals[src][row["instruction"]]
        elif lab["label"] == "off_topic":
            assert row["output"] != originals[src][row["instruction"]] and row["output"] in outputs[src]
        elif lab["label"] == "refusal":
            assert row["output"] != originals[src][row["instruction"]] and len(row["output"]) < 400
        elif lab["label"] == "near_duplicate":
            seed = seeds[lab["group"]]
            assert row["instruction"] != seed["instruction"] and row["output"].startswith(seed["output"].rstrip())


def test_shedkit_reads_the_suite(suite):
    from shedkit.data.pool import load_pool
    from shedkit.evaluate.suite import Suite

    pool = load_pool(suite / "pool.jsonl")
    assert len(pool.records) == 3000
    multi = [r for r in pool.records if r.row.get("history")]
    assert multi and all(len(r.turns) == 2 * (len(r.row["history"]) + 1) for r in multi)
    found = Suite.discover(suite)
    assert found.pool == suite / "pool.jsonl" and found.labels == suite / "pool_labels.jsonl"
    assert set(found.dev) == {"alpaca", "lima", "gsm8k", "mixed", "arc_easy"}
    assert set(found.test) == {"alpaca", "lima", "gsm8k", "arc_easy"}
    assert found.meta()["mixed_test"] == ["alpaca", "lima", "gsm8k"]


def test_seeded_bytes(suite, tmp_path):
    again, other = tmp_path / "again", tmp_path / "other"
    _run(again, 0, "2")
    for p in sorted(suite.iterdir()):
        assert (again / p.name).read_bytes() == p.read_bytes(), p.name
    _run(other, 1, "1")
    assert (other / "pool.jsonl").read_bytes() != (suite / "pool.jsonl").read_bytes()
