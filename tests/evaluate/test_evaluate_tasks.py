"""MMLU CSV conversion (lm-eval's zero-shot MMLU prompt) and task loading."""

import pytest

from shedkit.errors import InputError, ShedkitError
from shedkit.evaluate.tasks import load_task, load_tasks, mmlu_prompt, read_mmlu_csv, task_name

CSV = (
    "question,choice0,choice1,choice2,choice3,answer\n"
    '"  What is 2 + 2?\n",3,4,5,"22, maybe",1\n'
    "Which gas do plants take in?,oxygen,carbon dioxide,helium,neon,1\n"
)


def test_mmlu_csv_becomes_lm_eval_prompts(tmp_path):
    path = tmp_path / "high_school_math_test.csv"
    path.write_text(CSV)
    items = read_mmlu_csv(path)
    assert len(items) == 2
    assert items[0].query == (
        "The following are multiple choice questions (with answers) about high school math.\n\n"
        "What is 2 + 2?\nA. 3\nB. 4\nC. 5\nD. 22, maybe\nAnswer:"
    )
    assert items[0].choices == ("A", "B", "C", "D") and items[0].gold == 1
    assert items[1].query.endswith("Which gas do plants take in?\nA. oxygen\nB. carbon dioxide\nC. helium\nD. neon\nAnswer:")
    bare = read_mmlu_csv(path, description=False)
    assert bare[0].query == "What is 2 + 2?\nA. 3\nB. 4\nC. 5\nD. 22, maybe\nAnswer:"
    assert mmlu_prompt("Q?", ["a", "b", "c", "d"]) == "Q?\nA. a\nB. b\nC. c\nD. d\nAnswer:"


def test_headerless_hendrycks_file_with_letter_answers(tmp_path):
    path = tmp_path / "anatomy_dev.csv"
    path.write_text("Which bone is longest?,femur,ulna,rib,skull,A\nWhich organ pumps blood?,lung,heart,liver,skin,B\n")
    task = load_task(path)
    assert task.kind == "mc" and task.name == "anatomy_dev" and [i.gold for i in task.dev.items] == [0, 1]
    assert task.dev.items[0].query.startswith("The following are multiple choice questions (with answers) about anatomy.\n\n")


def test_directory_of_csvs_is_one_task_with_subtasks(tmp_path):
    d = tmp_path / "mmlu" / "test"
    d.mkdir(parents=True)
    (d / "b_subject_test.csv").write_text(CSV)
    (d / "a_subject_test.csv").write_text(CSV.replace(",1\n", ",2\n", 1))
    task = load_task(d)
    assert task.name == "mmlu_test" and len(task) == 4
    assert task.subtasks == (("a_subject_test", 2), ("b_subject_test", 2))
    assert [i.gold for i in task.dev.items] == [2, 1, 1, 1]
    assert task.head(3).subtasks == (("a_subject_test", 2), ("b_subject_test", 1)) and len(task.head(3)) == 3


def test_bad_mmlu_rows_name_file_and_row(tmp_path):
    path = tmp_path / "x_test.csv"
    path.write_text("question,choice0,choice1,choice2,choice3,answer\nQ?,a,b,c,d,7\n")
    with pytest.raises(InputError, match=r"x_test.csv, row 2: 'answer' must be 0-3 or A-D"):
        read_mmlu_csv(path)
    empty = tmp_path / "dir"
    empty.mkdir()
    with pytest.raises(ShedkitError, match="MMLU CSV"):
        load_task(empty)


def test_task_kinds_and_names(tmp_path, write_jsonl, mc_rows, alpaca_rows):
    mc = load_task(write_jsonl(tmp_path / "target_arc_easy_test.jsonl", mc_rows))
    loss = load_task(write_jsonl(tmp_path / "target_alpaca_test.jsonl", alpaca_rows))
    assert (mc.name, mc.kind, mc.metrics) == ("arc_easy_test", "mc", ("acc", "acc_norm"))
    assert (loss.name, loss.kind, len(loss)) == ("alpaca_test", "records", 24)
    assert loss.head(5).dev.records == loss.dev.records[:5]
    twice = load_tasks([tmp_path / "target_alpaca_test.jsonl", tmp_path / "target_alpaca_test.jsonl"])
    assert [t.name for t in twice] == ["alpaca_test", "alpaca_test_2"]
    assert task_name("pool.jsonl") == "pool"
    with pytest.raises(ShedkitError, match="not found"):
        load_task(tmp_path / "missing.jsonl")
