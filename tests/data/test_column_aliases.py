import json

import pytest

from shedkit.data.pool import load_pool
from shedkit.errors import InputError
from shared_data import shared_path


def write(tmp_path, rows, name="pool.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("user,assistant,fmt", [
    ("question", "answer", "prompt-completion"),
    ("query", "response", "prompt-completion"),
    ("prompt", "response", "prompt-completion"),
    ("input", "output", "prompt-completion"),
    ("instruction", "response", "dolly"),
])
def test_common_column_pairs_are_recognised(tmp_path, user, assistant, fmt):
    path = write(tmp_path, [{user: "What is 2+2?", assistant: "4", "id": 7}, {user: "Hi", assistant: "Hello"}])
    pool = load_pool(path)
    assert pool.format == fmt
    assert [(t.role, t.content) for t in pool.records[0].turns] == [("user", "What is 2+2?"), ("assistant", "4")]
    assert pool.records[1].response == "Hello"
    if fmt == "prompt-completion":
        assert "{" + f"{user}, {assistant}" + "}" in pool.mapping
        assert pool.field_map.get("completion") == assistant
    # the rows themselves are untouched: the subset is written back byte for byte
    out = pool.write_subset([1], tmp_path / "subset.jsonl")
    assert out.read_text() == path.read_text().splitlines(keepends=True)[1]


def test_same_text_same_id_whatever_the_column_names(tmp_path):
    a = load_pool(write(tmp_path, [{"question": "q", "answer": "a"}], "a.jsonl"))
    b = load_pool(write(tmp_path, [{"prompt": "q", "completion": "a"}], "b.jsonl"))
    assert a.records[0].id == b.records[0].id


def test_ambiguous_pairs_get_a_clear_error(tmp_path):
    path = write(tmp_path, [{"question": "q", "answer": "a", "input": "i", "output": "o"}])
    with pytest.raises(InputError, match=r"line 1: ambiguous columns.*\{question, answer\} and \{input, output\}.*--format prompt-completion --field"):
        load_pool(path)


def test_explicit_mapping_still_wins(tmp_path):
    path = write(tmp_path, [{"question": "q", "answer": "a", "input": "i", "output": "o"}])
    pool = load_pool(path, format="prompt-completion", fields=["prompt=input", "completion=output"])
    assert pool.records[0].response == "o" and pool.detected is None
    assert pool.mapping == "prompt-completion (--format) with prompt=input, completion=output"


def test_alias_is_not_used_when_a_format_matches(tmp_path):
    pool = load_pool(write(tmp_path, [{"instruction": "i", "input": "", "output": "o", "question": "x", "answer": "y"}]))
    assert pool.format == "alpaca" and pool.records[0].response == "o"


def test_manifest_says_which_mapping(tmp_path):
    from shedkit.pipeline.select import select

    result = select(write(tmp_path, [{"query": f"q{i}", "response": f"r{i}"} for i in range(5)]), budget=2, seed=0)
    assert result.manifest["pool"]["mapping"] == "columns {query, response} read as prompt-completion (prompt=query, completion=response)"
    assert result.manifest["pool"]["field_map"] == {"prompt": "query", "completion": "response"}


@pytest.mark.shared
def test_gsm8k_file_loads_as_question_answer():
    pool = load_pool(shared_path("data", "gsm8k", "train.jsonl"))
    assert pool.format == "prompt-completion" and pool.field_map == {"prompt": "question", "completion": "answer"}
    first = pool.records[0]
    assert first.instruction.startswith("Natalia sold clips") and "72" in first.response
