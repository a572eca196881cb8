"""The report shows the data: clusters with proxy and members, extremes of the method's score,
a map of the pool; row text is truncated and escaped. Rendered in headless Chromium if present."""

import json
import shutil
import subprocess

import numpy as np
import pytest

import shedkit
from shedkit.report.data_view import MAP_FILE, TEXT_CHARS, pca_2d, short
from shedkit.report.html import write_report

EVIL = '<img src=x onerror="alert(1)">'


def pool_rows(n=24):
    rows = []
    for i in range(n):
        topic = ["math", "words", "code"][i % 3]
        rows.append({"instruction": f"{topic} task {i} " + (EVIL if i == 4 else ""),
                     "input": "", "output": f"answer {i} " + "long " * (60 if i == 7 else 1), "source": topic})
    return rows


@pytest.fixture
def dq_run(tmp_path):
    """A DQ run with the model-free embedder: every data section has something to show."""
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in pool_rows()), encoding="utf-8")
    res = shedkit.select(path, method="dq", budget=6, seed=0, out=tmp_path / "run", embedder="hashed-ngrams",
                         bins=3, progress=False)
    return res


def test_report_opens_with_the_request_and_the_subset(dq_run, read_report):
    report = read_report(dq_run.files["report"])
    # DQ has bins but no clusters and no per-row score: no clusters or extremes sections
    assert [s.id for s in report.parser.sections] == ["summary", "map", "by-dq_bin", "timings", "settings"]
    summary = report.sections["summary"].text
    assert "dq selected 6 of 24 rows (25.0%) from pool.jsonl" in summary
    assert "rows from 3 of 3 DQ bins" in summary
    # the pool's `source` column is recognised as the composition to show
    assert "by source" in summary and "(pool 33%)" in summary


def test_map_is_the_pca_of_the_embeddings(dq_run, read_report):
    from shedkit.embed import embed_records

    run = dq_run.out_dir
    xy = np.load(run / MAP_FILE)
    emb = embed_records(dq_run.pool.records, embedder="hashed-ngrams", progress=False)
    centred = emb - emb.mean(axis=0)
    # same 2-D subspace as the top principal components (up to sign): naive reference via eigh
    vals, vecs = np.linalg.eigh(centred.T @ centred)
    ref = centred @ vecs[:, ::-1][:, :2]
    np.testing.assert_allclose(np.abs(xy), np.abs(ref), atol=1e-4)
    report = read_report(dq_run.files["report"])
    assert len(report.sections["map"].imgs) == 1 and "6 selected rows" in report.sections["map"].text


def test_extremes_show_the_highest_and_lowest_rows(tmp_path, make_run, read_report):
    rows = pool_rows(12)
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    from shedkit.data.pool import load_pool

    pool = load_pool(path)
    score = [0.1 * i for i in range(12)]
    selected = [int(i >= 9) for i in range(12)]
    run = make_run(tmp_path / "run", {"learnability": score}, selected,
                   {"pool": {"path": str(path), "format": "alpaca", "field_map": {}}, "method": {"name": "lobass"}})
    import csv

    with open(run / "scores.csv", newline="") as fh:  # real ids, so the pool is accepted back
        body = list(csv.reader(fh))
    for line, rec in zip(body[1:], pool.records):
        line[1] = rec.id
    with open(run / "scores.csv", "w", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows(body)
    report = read_report(write_report(run))
    ext = report.sections["extremes"]
    highest, lowest = ext.tables
    assert [r[0] for r in highest[1:]] == ["11", "10", "9", "8", "7"]
    assert [r[0] for r in lowest[1:]] == ["0", "1", "2", "3", "4"]
    assert [r[2] for r in highest[1:4]] == ["yes"] * 3 and highest[4][2] == ""
    assert "math task 9" in highest[3][3]
    # hostile row text is escaped, long text cut
    assert EVIL not in report.text and "&lt;img src=x" in report.text
    assert "long " * 40 not in report.text and "…" in report.text
    assert "No map: this method uses no embeddings" in report.sections["map"].text


def test_clusters_section_lists_proxy_and_members(tmp_path, make_run, read_report):
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in pool_rows(12)), encoding="utf-8")
    from shedkit.data.pool import load_pool

    ids = [r.id for r in load_pool(path).records]
    cols = {"cluster": [i % 3 for i in range(12)], "is_proxy": [int(i < 3) for i in range(12)],
            "value": [[0.5, -0.1, 0.9][i % 3] for i in range(12)], "value_stderr": [0.01] * 12}
    run = make_run(tmp_path / "run", cols, [int(i % 3 == 2) for i in range(12)],
                   {"pool": {"path": str(path), "format": "alpaca", "field_map": {}}})
    lines = (run / "scores.csv").read_text().splitlines()
    fixed = [lines[0]] + [",".join([l.split(",")[0], ids[i], *l.split(",")[2:]]) for i, l in enumerate(lines[1:])]
    (run / "scores.csv").write_text("\n".join(fixed) + "\n")
    report = read_report(write_report(run))
    table = report.sections["clusters"].tables[0]
    assert table[0][:4] == ["cluster", "rows", "selected", "value ± stderr"]
    assert [r[0] for r in table[1:]] == ["2", "0", "1"]  # highest value first
    assert table[1][1:4] == ["4", "4", "0.9 ± 0.01"]
    assert "code task 2" in table[1][4]  # the proxy of cluster 2 is row 2
    assert "code task 5" in table[1][5] and "code task 2" not in table[1][5]


def test_in_memory_pool_report_has_row_text(tmp_path, read_report):
    res = shedkit.select(pool_rows(), method="random", budget=4, seed=0, out=tmp_path / "run")
    report = read_report(res.files["report"])
    summary = report.sections["summary"].text
    assert "random selected 4 of 24 rows (16.7%) from <list of dicts>" in summary
    assert "4 rows, returned as the input's type (list); written as subset.jsonl" in summary


def test_short_truncates_and_escapes():
    assert short("a <b>  c\n d") == "a &lt;b&gt; c d"
    cut = short("x" * 500)
    assert len(cut) == TEXT_CHARS and cut.endswith("…")


def test_pca_signs_are_fixed():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 5)) * np.array([5, 3, 1, 1, 1])
    a, b = pca_2d(x), pca_2d(x.copy())
    np.testing.assert_array_equal(a, b)
    assert pca_2d(x[:1]).shape == (1, 2)


def test_chunked_pca_equals_the_svd_projection():
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(1000, 12)) * np.linspace(4, 0.5, 12) + 3.0).astype(np.float32)
    centred = x.astype(np.float64) - x.astype(np.float64).mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    svd = centred @ vt[:2].T
    got = pca_2d(x, chunk=97)  # chunks that do not divide the rows
    for k in range(2):  # the same axes up to the sign convention
        sign = np.sign(svd[:, k] @ got[:, k])
        np.testing.assert_allclose(got[:, k], sign * svd[:, k], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got, pca_2d(x, chunk=4096), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(pca_2d(np.ones((5, 3))), np.zeros((5, 2), dtype=np.float32))


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(dq_run, tmp_path):
    shot = tmp_path / "report.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1280,1600",
           dq_run.files["report"].resolve().as_uri()]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    png = shot.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    from matplotlib.image import imread

    pixels = imread(str(shot))
    assert pixels.shape[:2] == (1600, 1280)
    ink = (pixels[..., :3].mean(axis=2) < 0.5).mean()
    assert 0.005 < ink < 0.5  # text was drawn: neither a blank page nor a black one
