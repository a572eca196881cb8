"""Bad input: exit code 2, one clear message naming file + line/row + problem, no output left."""

import json

import pytest

from shedkit.cli.main import main


def run_cli(args, capsys):
    code = main(args)
    err = capsys.readouterr().err
    return code, " ".join(err.split())


GOOD = '{"instruction": "a", "input": "", "output": "b"}\n'

CASES = {
    "invalid_json": (GOOD + '{"instruction": "a", "output": \n', "pool.jsonl", "line 2: invalid JSON"),
    "missing_field": (GOOD + GOOD + '{"instruction": "a", "input": ""}\n', "pool.jsonl", "line 3: missing field 'output'"),
    "empty_response": (GOOD + '{"instruction": "a", "input": "", "output": "  "}\n', "pool.jsonl", "line 2: empty response"),
    "wrong_type": (GOOD + '{"instruction": "a", "input": "", "output": 42}\n', "pool.jsonl", "line 2: field 'output' must be a string, got int"),
    "not_object": (GOOD + '[1, 2]\n', "pool.jsonl", "line 2: expected a JSON object, got list"),
    "unknown_format": ('{"question": "q", "reply": "a"}\n', "pool.jsonl", "line 1: unknown format: columns ['question', 'reply']"),
    "unknown_extension": (GOOD, "pool.txt", "unknown file type '.txt'"),
    "json_not_array": ('{\n  "a": 1\n}\n', "pool.json", "expected a JSON array"),
    "csv_bad_width": ("instruction,input,output\na,,b\nc,d\n", "pool.csv", "line 3: expected 3 fields, found 2"),
    "bad_role": ('{"conversations": [{"from": "robot", "value": "x"}]}\n', "pool.jsonl", "unknown role 'robot'"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_pool_exit_2_message_no_output(tmp_path, capsys, case):
    text, name, expected = CASES[case]
    pool = tmp_path / name
    pool.write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    code, err = run_cli(["select", str(pool), "--budget", "1", "--out", str(out)], capsys)
    assert code == 2
    assert str(pool) in err and expected in err, err
    assert "Traceback" not in err
    assert not out.exists()


def test_undecodable_bytes(tmp_path, capsys):
    pool = tmp_path / "pool.jsonl"
    pool.write_bytes(GOOD.encode() + b'{"instruction": "\xff\xfe", "input": "", "output": "b"}\n')
    out = tmp_path / "out"
    code, err = run_cli(["select", str(pool), "--budget", "1", "--out", str(out)], capsys)
    assert code == 2 and "line 2: undecodable bytes (not UTF-8)" in err and not out.exists()


@pytest.mark.parametrize("budget,expected", [("5", "larger than the pool (3 rows)"), ("0", "must be positive"),
                                             ("-0.2", "must be positive"), ("1.5", "neither a fraction"),
                                             ("abc", "must be a fraction")])
def test_bad_budget(tmp_path, capsys, budget, expected):
    pool = tmp_path / "pool.jsonl"
    pool.write_text(GOOD * 3)
    out = tmp_path / "out"
    code, err = run_cli(["select", str(pool), "--budget", budget, "--out", str(out)], capsys)
    assert code == 2 and expected in err and not out.exists()


def test_existing_out_dir_left_unchanged(tmp_path, capsys):
    pool = tmp_path / "pool.jsonl"
    pool.write_text(GOOD + '{"instruction": "a"}\n')
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _ = run_cli(["select", str(pool), "--budget", "1", "--out", str(out)], capsys)
    assert code == 2
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "mine"


def test_missing_pool_and_unknown_method(tmp_path, capsys):
    code, err = run_cli(["select", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "no such file" in err
    pool = tmp_path / "pool.jsonl"
    pool.write_text(GOOD * 3)
    code, err = run_cli(["select", str(pool), "--method", "randon", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "did you mean 'random'" in err and not (tmp_path / "o").exists()


def test_skip_empty_counts_rows(tmp_path, capsys):
    pool = tmp_path / "pool.jsonl"
    pool.write_text(GOOD + '{"instruction": "a", "input": "", "output": ""}\n' + GOOD.replace("b", "c"))
    out = tmp_path / "out"
    assert main(["select", str(pool), "--budget", "2", "--out", str(out), "--skip-empty"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["pool"]["skipped_empty"] == [1]
    assert (out / "subset.jsonl").read_text() == GOOD + GOOD.replace("b", "c")
