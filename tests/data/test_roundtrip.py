"""Every format in every container round-trips: read -> select all -> write == input."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shedkit.data import load_pool
from shedkit.data.containers import write_subset

ROWS = {
    "alpaca": [
        {"instruction": "Add 2 and 3.", "input": "", "output": "5"},
        {"instruction": "Translate", "input": "bonjour, \"ami\"\nligne", "output": "hello, \"friend\"\nline"},
        {"instruction": "Ünïcødé ✓", "input": "", "output": "ok ✓"},
    ],
    "dolly": [
        {"instruction": "Who?", "context": "Ada wrote code.", "response": "Ada.", "category": "qa"},
        {"instruction": "Why?", "context": "", "response": "Because.", "category": "open"},
    ],
    "prompt-completion": [
        {"prompt": "2+2=", "completion": "4"},
        {"prompt": "Capital of France?", "completion": "Paris, with a comma"},
    ],
    "sharegpt": [
        {"id": "a", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
        {"id": "b", "conversations": [{"from": "system", "value": "be brief"}, {"from": "human", "value": "q"},
                                      {"from": "gpt", "value": "a"}, {"from": "human", "value": "q2"},
                                      {"from": "gpt", "value": "a2"}]},
    ],
    "openai": [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
        {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                      {"role": "assistant", "content": "a"}]},
    ],
}
FLAT = ("alpaca", "dolly", "prompt-completion")


def write_container(rows, path, container, indent=2):
    if container == "jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    elif container == "json":
        path.write_text(json.dumps(rows, indent=indent, ensure_ascii=False) + "\n", encoding="utf-8")
    elif container == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif container == "csv":
        import csv

        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif container == "hf":
        import datasets

        datasets.Dataset.from_list(rows).save_to_disk(str(path))
    return path


CASES = [(f, c) for f in ROWS for c in ("jsonl", "json", "parquet", "hf")] + [(f, "csv") for f in FLAT]


@pytest.mark.parametrize("fmt,container", CASES)
def test_roundtrip_select_all(tmp_path, fmt, container):
    ext = "" if container == "hf" else "." + container
    src = write_container(ROWS[fmt], tmp_path / f"pool{ext}", container)
    pool = load_pool(src)
    assert pool.format == fmt
    assert len(pool.records) == len(ROWS[fmt])
    out = tmp_path / f"out{ext}"
    write_subset(pool.table, range(len(pool.records)), out)
    if container in ("jsonl", "json", "csv"):
        assert out.read_bytes() == src.read_bytes()
    elif container == "parquet":
        assert pq.read_table(out).equals(pq.read_table(src))
        assert pq.read_table(out).schema == pq.read_table(src).schema
    else:
        import datasets

        a, b = datasets.load_from_disk(str(out)), datasets.load_from_disk(str(src))
        assert a.features == b.features and a.to_list() == b.to_list()
    # the original rows are untouched
    assert [dict(r.row) for r in pool.records] == [dict(r) for r in pool.table.rows]


@pytest.mark.parametrize("container", ["jsonl", "json", "csv", "parquet"])
def test_subset_rows_keep_input_order_and_bytes(tmp_path, container):
    rows = [{"instruction": f"q{i}", "input": "", "output": f"answer {i}"} for i in range(10)]
    src = write_container(rows, tmp_path / f"pool.{container}", container)
    pool = load_pool(src)
    out = tmp_path / f"sub.{container}"
    write_subset(pool.table, [7, 2, 5], out)
    back = load_pool(out)
    assert [r.row["instruction"] for r in back.records] == ["q2", "q5", "q7"]
    if container == "jsonl":
        lines = src.read_text().splitlines(keepends=True)
        assert out.read_text() == lines[2] + lines[5] + lines[7]


def test_json_array_keeps_element_text_and_indentation(tmp_path):
    src = write_container(ROWS["alpaca"], tmp_path / "p.json", "json", indent=4)
    pool = load_pool(src)
    out = tmp_path / "o.json"
    write_subset(pool.table, [0, 2], out)
    assert out.read_text(encoding="utf-8") == json.dumps([ROWS["alpaca"][0], ROWS["alpaca"][2]], indent=4, ensure_ascii=False) + "\n"


def test_same_content_same_id_across_containers(tmp_path):
    a = load_pool(write_container(ROWS["alpaca"], tmp_path / "a.jsonl", "jsonl"))
    b = load_pool(write_container(ROWS["alpaca"], tmp_path / "b.parquet", "parquet"))
    assert [r.id for r in a.records] == [r.id for r in b.records]
    assert len(set(r.id for r in a.records)) == len(a.records)


def test_turns_normalised():
    from shedkit.data.formats import FORMATS, row_to_turns

    where = {"path": "x", "line": 1, "row": None}
    alp = row_to_turns(FORMATS["alpaca"], ROWS["alpaca"][1], {}, where)
    assert [t.role for t in alp] == ["user", "assistant"]
    assert alp[0].content == "Translate\n\nbonjour, \"ami\"\nligne"
    sg = row_to_turns(FORMATS["sharegpt"], ROWS["sharegpt"][1], {}, where)
    assert [t.role for t in sg] == ["system", "user", "assistant", "user", "assistant"]


def test_field_mapping(tmp_path):
    rows = [{"question": "What is 2+2?", "answer": "4"}, {"question": "3+3?", "answer": "6"}]
    src = write_container(rows, tmp_path / "gsm.jsonl", "jsonl")
    pool = load_pool(src, format="alpaca", fields=["instruction=question", "output=answer"])
    assert pool.records[0].instruction == "What is 2+2?" and pool.records[0].response == "4"
    # mapping alone is enough for detection
    assert load_pool(src, fields={"instruction": "question", "output": "answer"}).format == "alpaca"


def test_dedup_drops_and_reports(tmp_path):
    rows = [ROWS["alpaca"][0], ROWS["alpaca"][1], ROWS["alpaca"][0]]
    src = write_container(rows, tmp_path / "d.jsonl", "jsonl")
    kept = load_pool(src)
    assert len(kept.records) == 3 and kept.duplicates == [(2, 0)]
    dropped = load_pool(src, dedup=True)
    assert [r.index for r in dropped.records] == [0, 1] and dropped.duplicates == [(2, 0)]


def test_lima_history_becomes_turns():
    from shared_data import shared_path

    pool = load_pool(shared_path("data", "lima", "lima.json"))
    multi = [r for r in pool.records if r.row.get("history")]
    assert len(multi) == 29
    r = multi[0]
    assert len(r.turns) == 2 * len(r.row["history"]) + 2
    assert r.response == r.row["output"]
