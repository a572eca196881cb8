"""shedkit.select on in-memory pools: the subset comes back as the input's type, rows unchanged."""

import json

import numpy as np
import pytest

import shedkit

ROWS = [{"instruction": f"Say {i}", "input": "", "output": f"{i} it is", "meta": {"n": i}} for i in range(20)]


def expected_positions(budget=5, seed=3):
    return shedkit.select([dict(r) for r in ROWS], method="random", budget=budget, seed=seed).rows


def test_list_of_dicts_round_trips():
    data = [dict(r) for r in ROWS]
    result = shedkit.select(data, method="random", budget=5, seed=3)
    sub = result.subset
    assert isinstance(sub, list) and len(sub) == 5
    assert all(any(s is d for d in data) for s in sub)  # the very same dict objects
    assert sub == [ROWS[i] for i in result.rows] and data == ROWS  # input not modified
    scores = result.scores
    assert list(scores.columns[:3]) == ["row", "id", "selected"] and len(scores) == 20
    assert sorted(scores.loc[scores.selected, "row"]) == result.rows


def test_path_and_list_select_the_same_rows(tmp_path):
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    from_file = shedkit.select(path, method="random", budget=5, seed=3)
    assert from_file.rows == expected_positions()
    assert from_file.subset == [ROWS[i] for i in from_file.rows]


def test_pandas_dataframe_round_trips():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(ROWS, index=[f"r{i}" for i in range(20)])
    result = shedkit.select(df, method="random", budget=5, seed=3)
    sub = result.subset
    assert isinstance(sub, pd.DataFrame)
    assert result.rows == expected_positions()
    pd.testing.assert_frame_equal(sub, df.iloc[result.rows])
    assert list(sub.index) == [f"r{i}" for i in result.rows]


def test_datasets_dataset_round_trips():
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list(ROWS)
    result = shedkit.select(ds, method="random", budget=5, seed=3)
    sub = result.subset
    assert isinstance(sub, datasets.Dataset) and sub.features == ds.features
    assert sub.to_list() == [ROWS[i] for i in expected_positions()]


def test_dataset_dict_with_split():
    datasets = pytest.importorskip("datasets")
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS),
                               "test": datasets.Dataset.from_list(ROWS[:3])})
    result = shedkit.select(dd, split="train", method="random", budget=5, seed=3)
    sub = result.subset
    assert isinstance(sub, datasets.DatasetDict) and set(sub) == {"train", "test"}
    assert sub["train"].to_list() == [ROWS[i] for i in expected_positions()]
    assert sub["test"].to_list() == ROWS[:3]  # other splits untouched
    with pytest.raises(shedkit.ShedkitError, match="split="):
        shedkit.select(dd, method="random", budget=5)
    with pytest.raises(shedkit.ShedkitError, match="'valid' is not in"):
        shedkit.select(dd, split="valid", method="random", budget=5)
    assert result.manifest["config"]["split"] == "train" and result.manifest["pool"]["input"] == "datasetdict"
    with pytest.raises(shedkit.ShedkitError, match="split='train' applies to an in-memory DatasetDict"):
        shedkit.select("pool.jsonl", split="train", budget=5)


def test_conversations_in_a_dataframe_and_bad_rows():
    pd = pytest.importorskip("pandas")
    rows = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]} for i in range(6)]
    df = pd.DataFrame(rows)
    result = shedkit.select(df, method="random", budget=2, seed=0)
    assert result.pool.format == "openai" and len(result.subset) == 2
    with pytest.raises(shedkit.ShedkitError, match=r"<list of dicts>, row 1: .*must be a string"):
        shedkit.select([{"prompt": "a", "completion": "b"}, {"prompt": "a", "completion": 3}], budget=1)
    with pytest.raises(shedkit.ShedkitError, match="cannot select from a int"):
        shedkit.select(3, budget=1)


def test_in_memory_outputs_are_written(tmp_path):
    datasets = pytest.importorskip("datasets")
    result = shedkit.select([dict(r) for r in ROWS], method="random", budget=5, seed=3, out=tmp_path / "a")
    lines = (tmp_path / "a" / "subset.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in lines] == [ROWS[i] for i in result.rows]
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["pool"]["input"] == "list" and manifest["pool"]["path"] == "<list of dicts>"
    result = shedkit.select(datasets.Dataset.from_list(ROWS), method="random", budget=5, seed=3, out=tmp_path / "b")
    assert datasets.load_from_disk(str(tmp_path / "b" / "subset")).to_list() == [ROWS[i] for i in result.rows]


def test_sft_trainer_conversion_path():
    """What the README's TRL example does up to training: the subset is a Dataset SFTTrainer
    accepts, in a format it reads (prompt/completion or messages)."""
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list([{"prompt": f"Say {i}", "completion": f"{i} it is"} for i in range(20)])
    result = shedkit.select(ds, method="random", budget=0.25, seed=0)
    train = result.subset
    assert isinstance(train, datasets.Dataset) and train.column_names == ["prompt", "completion"]
    assert len(train) == 5 and train.to_list() == [ds[i] for i in result.rows]
    np.testing.assert_array_equal(sorted(result.scores.loc[result.scores.selected, "row"]), result.rows)
    pytest.importorskip("trl")
    from trl.data_utils import is_conversational  # the check SFTTrainer makes on each dataset

    assert not is_conversational(train[0])
