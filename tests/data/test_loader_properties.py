"""Property tests: random rows survive every text container byte-for-byte, and ids are stable."""

import csv
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shedkit.data import load_pool
from shedkit.data.containers import write_subset

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\x00"), max_size=40)
nonblank = text.filter(lambda s: s.strip() != "")
alpaca_row = st.fixed_dictionaries({"instruction": nonblank, "input": text, "output": nonblank})
rows_strategy = st.lists(alpaca_row, min_size=1, max_size=12)
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _write(rows, path, container):
    if container == "jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    elif container == "json":
        path.write_text(json.dumps(rows, indent=1, ensure_ascii=True), encoding="utf-8")
    else:
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=["instruction", "input", "output"])
            w.writeheader()
            w.writerows(rows)


@SETTINGS
@given(rows=rows_strategy, data=st.data())
def test_random_rows_roundtrip_all_text_containers(tmp_path_factory, rows, data):
    tmp = tmp_path_factory.mktemp("prop")
    for container in ("jsonl", "json", "csv"):
        src = tmp / f"pool.{container}"
        _write(rows, src, container)
        pool = load_pool(src)
        assert [dict(r.row) for r in pool.records] == rows
        out = tmp / f"all.{container}"
        write_subset(pool.table, range(len(rows)), out)
        assert out.read_bytes() == src.read_bytes()
        pick = sorted(data.draw(st.sets(st.integers(0, len(rows) - 1), min_size=1)))
        write_subset(pool.table, pick, out)
        assert [dict(r.row) for r in load_pool(out).records] == [rows[i] for i in pick]


@SETTINGS
@given(rows=rows_strategy)
def test_ids_depend_only_on_content(tmp_path_factory, rows):
    tmp = tmp_path_factory.mktemp("ids")
    _write(rows, tmp / "a.jsonl", "jsonl")
    _write(rows, tmp / "a.csv", "csv")
    a, b = load_pool(tmp / "a.jsonl"), load_pool(tmp / "a.csv")
    assert [r.id for r in a.records] == [r.id for r in b.records]
    for r, row in zip(a.records, rows):
        same = [s for s in a.records if s.id == r.id]
        assert all(dict(s.row) == dict(row) or s.turns == r.turns for s in same)
