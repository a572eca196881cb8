import csv
import json

import numpy as np

from shedkit.cli.main import main
from shedkit.data.synthetic import write_demo_data


def test_cluster_command(tmp_path):
    pool = write_demo_data(tmp_path / "d", n=50, seed=3)["pool"]
    out = tmp_path / "c"
    assert main(["cluster", str(pool), "--out", str(out), "--embedder", "hashed-ngrams", "--clusters", "6"]) == 0
    rows = list(csv.DictReader(open(out / "scores.csv")))
    labels = np.array([int(r["cluster"]) for r in rows])
    assert len(rows) == 50 and set(labels) == set(range(6))
    assert sum(int(r["is_proxy"]) for r in rows) == 6
    for r in rows:  # cluster_size is the size of the row's cluster
        assert int(r["cluster_size"]) == int((labels == int(r["cluster"])).sum())
    for c in range(6):  # exactly one proxy per cluster
        assert sum(1 for r in rows if int(r["cluster"]) == c and r["is_proxy"] == "1") == 1
    m = json.loads((out / "manifest.json").read_text())
    assert m["counts"] == {"records": 50, "clusters": 6}


def test_cluster_embed_system_flag_reaches_the_embedder(tmp_path, monkeypatch):
    """--embed-system keeps system prompts in the embedded text; by default they are left out."""
    import shedkit.cluster.stage as stage

    seen = []
    real = stage.cluster_records

    def spy(records, **kw):
        seen.append(kw.get("include_system"))
        return real(records, **kw)

    monkeypatch.setattr(stage, "cluster_records", spy)
    import shedkit.cluster as cluster_pkg

    monkeypatch.setattr(cluster_pkg, "cluster_records", spy)
    pool = write_demo_data(tmp_path / "d", n=20, seed=3)["pool"]
    assert main(["cluster", str(pool), "--out", str(tmp_path / "a"), "--embedder", "hashed-ngrams", "--clusters", "3"]) == 0
    assert main(["cluster", str(pool), "--out", str(tmp_path / "b"), "--embedder", "hashed-ngrams", "--clusters", "3",
                 "--embed-system"]) == 0
    assert seen == [False, True]
