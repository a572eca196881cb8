import json

from shedkit.data.pool import load_pool


def test_openai_tool_turns_are_read(tmp_path):
    row = {"messages": [
        {"role": "system", "content": "You can call tools."},
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {"name": "weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
        {"role": "tool", "content": "3 C, rain"},
        {"role": "assistant", "content": "It is 3 C and raining."},
    ]}
    path = tmp_path / "pool.jsonl"
    path.write_text(json.dumps(row) + "\n")
    rec = load_pool(path).records[0]
    assert [t.role for t in rec.turns] == ["system", "user", "assistant", "tool", "assistant"]
    assert json.loads(rec.turns[2].content)[0]["function"]["name"] == "weather"
    assert rec.turns[3].content == "3 C, rain" and rec.response == "It is 3 C and raining."


def test_sharegpt_observation_is_a_tool_turn(tmp_path):
    row = {"conversations": [{"from": "human", "value": "2+2?"}, {"from": "function_call", "value": "calc(2+2)"},
                             {"from": "observation", "value": "4"}, {"from": "gpt", "value": "4."}]}
    path = tmp_path / "pool.jsonl"
    path.write_text(json.dumps(row) + "\n")
    rec = load_pool(path).records[0]
    assert [t.role for t in rec.turns] == ["user", "assistant", "tool", "assistant"]


def test_embedding_text_leaves_system_prompts_out_by_default(tmp_path):
    rows = [{"messages": [{"role": "system", "content": "LONG SHARED PROMPT"}, {"role": "user", "content": "u"},
                          {"role": "assistant", "content": "a"}]},
            {"messages": [{"role": "user", "content": "u2"}, {"role": "assistant", "content": "a2"}]}]
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with_system, without = load_pool(path).records
    assert with_system.embedding_text() == "u\na"
    assert with_system.embedding_text(include_system=True) == "LONG SHARED PROMPT\nu\na"
    # cached vectors stay keyed by id where the text is the whole row; the variant gets its own key
    assert with_system.embedding_key(include_system=True) == with_system.id
    assert with_system.embedding_key() != with_system.id
    assert without.embedding_key() == without.id and without.embedding_text() == "u2\na2"
