"""The report's first screen says how many rows each stage cut to max_length."""

from shedkit.report.data_view import truncation_facts


def test_truncation_facts():
    facts = dict(truncation_facts({
        "value_fine_tunes": {"rows": 10, "truncated_rows": 3, "dropped_tokens": 120, "max_length": 256},
        "value_dev": {"rows": 50, "truncated_rows": 0, "dropped_tokens": 0, "max_length": 256},
        "other": "not a stage",
    }))
    assert facts["truncated (value fine tunes)"].startswith("3 of 10 rows longer than max_length 256: 120 tokens")
    assert facts["not truncated"] == "value dev: every row fits max_length"
    assert truncation_facts(None) == [] and truncation_facts({}) == []
