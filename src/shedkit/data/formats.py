"""Detect a pool's row format and normalise rows to chat turns.

Each format names canonical fields; a field mapping (``{"instruction": "question"}``) says
which column holds a canonical field when the names differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from shedkit.data.records import Turn
from shedkit.errors import InputError, ShedkitError


class EmptyResponseError(InputError):
    """A row whose (last) response is empty: an error unless the caller skips such rows."""


@dataclass(frozen=True)
class Format:
    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    to_turns: Callable[[Mapping[str, str]], list[Turn]]  # takes canonical-name -> value


SHAREGPT_ROLES = {
    "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
    "chatgpt": "assistant", "bard": "assistant", "bing": "assistant", "model": "assistant",
    "system": "system",
}


def _alpaca(f: Mapping[str, Any]) -> list[Turn]:
    turns = [Turn("system", f["system"])] if f.get("system") else []
    for pair in f.get("history") or []:
        turns += [Turn("user", pair[0]), Turn("assistant", pair[1])]
    user = f["instruction"] + ("\n\n" + f["input"] if f.get("input") else "")
    return turns + [Turn("user", user), Turn("assistant", f["output"])]


def _dolly(f: Mapping[str, Any]) -> list[Turn]:
    user = f["instruction"] + ("\n\n" + f["context"] if f.get("context") else "")
    return [Turn("user", user), Turn("assistant", f["response"])]


def _prompt_completion(f: Mapping[str, Any]) -> list[Turn]:
    return [Turn("user", f["prompt"]), Turn("assistant", f["completion"])]


def _sharegpt(f: Mapping[str, Any]) -> list[Turn]:
    turns = [Turn("system", f["system"])] if f.get("system") else []
    return turns + [Turn(SHAREGPT_ROLES[m["from"]], m["value"]) for m in f["conversations"]]


def _openai(f: Mapping[str, Any]) -> list[Turn]:
    return [Turn(m["role"], m["content"]) for m in f["messages"]]


FORMATS: dict[str, Format] = {
    "alpaca": Format("alpaca", ("instruction", "output"), ("input", "system", "history"), _alpaca),
    "dolly": Format("dolly", ("instruction", "response"), ("context", "category"), _dolly),
    "sharegpt": Format("sharegpt", ("conversations",), ("system",), _sharegpt),
    "openai": Format("openai", ("messages",), (), _openai),
    "prompt-completion": Format("prompt-completion", ("prompt", "completion"), (), _prompt_completion),
}
ALIASES = {"messages": "openai", "chatml": "openai", "completion": "prompt-completion", "prompt_completion": "prompt-completion"}


def resolve_format_name(name: str) -> str:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in FORMATS:
        from shedkit.util.registry import unknown_name

        raise unknown_name("format", name, FORMATS)
    return key


def detect_format(path: Path, row: Mapping[str, Any], field_map: Mapping[str, str], line: int | None = None) -> str:
    """The first format whose required fields (after mapping) are all columns of the row."""
    columns = set(row)
    order = ["sharegpt", "openai", "alpaca", "dolly", "prompt-completion"]
    for name in order:
        if all(field_map.get(f, f) in columns for f in FORMATS[name].required):
            return name
    raise InputError(
        path,
        f"unknown format: columns {sorted(columns)} match none of "
        f"alpaca {{instruction, input, output}}, dolly {{instruction, context, response}}, "
        f"sharegpt {{conversations}}, openai {{messages}}, prompt-completion {{prompt, completion}}; "
        f"pass --format and --field (e.g. --format alpaca --field instruction=question --field output=answer)",
        line=line, row=None if line else 0,
    )


def parse_field_map(items: Any) -> dict[str, str]:
    """Accept ``["instruction=question", ...]`` (CLI) or ``{"instruction": "question"}`` (YAML)."""
    if not items:
        return {}
    if isinstance(items, Mapping):
        return {str(k): str(v) for k, v in items.items()}
    out = {}
    for item in items:
        if "=" not in str(item):
            raise ShedkitError(f"--field expects CANONICAL=COLUMN (e.g. instruction=question), got '{item}'")
        key, value = str(item).split("=", 1)
        out[key.strip()] = value.strip()
    return out


def row_to_turns(fmt: Format, row: Mapping[str, Any], field_map: Mapping[str, str], where: dict) -> list[Turn]:
    """Validate one row and convert it; ``where`` holds path/line/row for error messages."""
    f: dict[str, Any] = {}
    for name in fmt.required + fmt.optional:
        column = field_map.get(name, name)
        value = row.get(column)
        if name in fmt.required and column not in row:
            raise InputError(what=f"missing field '{column}'", **where)
        if value is None:
            if name in fmt.required:
                raise InputError(what=f"field '{column}' is null", **where)
            continue
        f[name] = value
    _check_types(fmt.name, f, field_map, where)
    turns = fmt.to_turns(f)
    _check_turns(turns, where)
    return turns


def _check_types(fmt: str, f: dict[str, Any], field_map: Mapping[str, str], where: dict) -> None:
    def col(name):
        return field_map.get(name, name)

    for name, value in f.items():
        if name in ("conversations", "messages", "history"):
            if not isinstance(value, (list, tuple)):
                raise InputError(what=f"field '{col(name)}' must be a list, got {type(value).__name__}", **where)
            continue
        if not isinstance(value, str):
            raise InputError(what=f"field '{col(name)}' must be a string, got {type(value).__name__}", **where)
    if fmt == "sharegpt":
        for i, m in enumerate(f["conversations"]):
            if not isinstance(m, Mapping) or not isinstance(m.get("from"), str) or not isinstance(m.get("value"), str):
                raise InputError(what=f"'{col('conversations')}[{i}]' must be an object with string 'from' and 'value'", **where)
            if m["from"] not in SHAREGPT_ROLES:
                raise InputError(what=f"'{col('conversations')}[{i}]' has unknown role '{m['from']}'", **where)
    if fmt == "openai":
        for i, m in enumerate(f["messages"]):
            if not isinstance(m, Mapping) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise InputError(what=f"'{col('messages')}[{i}]' must be an object with string 'role' and 'content'", **where)
            if m["role"] not in ("system", "user", "assistant"):
                raise InputError(what=f"'{col('messages')}[{i}]' has unknown role '{m['role']}'", **where)
    if fmt == "alpaca" and "history" in f:
        for i, pair in enumerate(f["history"]):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(isinstance(x, str) for x in pair):
                raise InputError(what=f"'{col('history')}[{i}]' must be a [user, assistant] pair of strings", **where)


def _check_turns(turns: list[Turn], where: dict) -> None:
    assistant = [t for t in turns if t.role == "assistant"]
    if not assistant:
        raise InputError(what="no assistant turn (nothing to learn from)", **where)
    if not assistant[-1].content.strip():
        raise EmptyResponseError(what="empty response (pass --skip-empty to leave such rows out)", **where)
    if not any(t.role == "user" and t.content.strip() for t in turns):
        raise InputError(what="empty instruction", **where)
