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
    "system": "system", "tool": "tool", "observation": "tool", "function": "tool",
    "function_call": "assistant",
}
OPENAI_ROLES = ("system", "user", "assistant", "tool")


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
    return [Turn(m["role"], _message_text(m)) for m in f["messages"]]


def _message_text(m: Mapping[str, Any]) -> str:
    """A message's content; an assistant message that only calls tools reads as its calls' JSON."""
    if m.get("content") is None and m.get("tool_calls"):
        import json

        return json.dumps(m["tool_calls"], ensure_ascii=False, sort_keys=True)
    return m["content"]


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


# Common column pairs read as prompt/response when no format's own columns match.
# (Dolly already covers {instruction, response}; it is listed so the error names it.)
COLUMN_ALIASES: tuple[tuple[tuple[str, str], str, dict[str, str]], ...] = (
    (("question", "answer"), "prompt-completion", {"prompt": "question", "completion": "answer"}),
    (("query", "response"), "prompt-completion", {"prompt": "query", "completion": "response"}),
    (("prompt", "response"), "prompt-completion", {"completion": "response"}),
    (("input", "output"), "prompt-completion", {"prompt": "input", "completion": "output"}),
    (("instruction", "response"), "dolly", {}),
)
DETECTION_ORDER = ("sharegpt", "openai", "alpaca", "dolly", "prompt-completion")


@dataclass(frozen=True)
class Detected:
    format: str
    field_map: dict[str, str]  # the mapping used (the caller's, or a recognised column pair's)
    columns: tuple[str, ...] = ()  # the recognised column pair, () when a format matched directly

    def describe(self) -> str:
        if not self.columns:
            return f"{self.format} (its own columns)" if not self.field_map else f"{self.format} with --field mapping"
        pairs = ", ".join(f"{k}={v}" for k, v in self.field_map.items())
        return f"columns {{{', '.join(self.columns)}}} read as {self.format}" + (f" ({pairs})" if pairs else "")


def detect_format(path: Path, row: Mapping[str, Any], field_map: Mapping[str, str], line: int | None = None) -> str:
    """The first format whose required fields (after mapping) are all columns of the row."""
    return detect_columns(path, row, field_map, line).format


def detect_columns(path: Path, row: Mapping[str, Any], field_map: Mapping[str, str], line: int | None = None) -> Detected:
    """The format of a row: a format whose columns are all there (after ``field_map``), else
    one of the common column pairs (COLUMN_ALIASES); several pairs at once is ambiguous."""
    columns = set(row)
    for name in DETECTION_ORDER:
        if all(field_map.get(f, f) in columns for f in FORMATS[name].required):
            return Detected(name, dict(field_map))
    where = {"line": line, "row": None if line else 0}
    if not field_map:
        matches = [a for a in COLUMN_ALIASES if set(a[0]) <= columns]
        if len(matches) == 1:
            pair, name, mapping = matches[0]
            return Detected(name, dict(mapping), pair)
        if len(matches) > 1:
            found = " and ".join("{" + ", ".join(m[0]) + "}" for m in matches)
            raise InputError(
                path,
                f"ambiguous columns: {sorted(columns)} hold both {found}; say which to use, e.g. "
                f"--format prompt-completion --field prompt={matches[0][0][0]} --field completion={matches[0][0][1]}",
                **where,
            )
    known = ", ".join("{" + ", ".join(a[0]) + "}" for a in COLUMN_ALIASES)
    raise InputError(
        path,
        f"unknown format: columns {sorted(columns)} match none of "
        f"alpaca {{instruction, input, output}}, dolly {{instruction, context, response}}, "
        f"sharegpt {{conversations}}, openai {{messages}}, prompt-completion {{prompt, completion}}, "
        f"nor the column pairs {known}; "
        f"pass --format and --field (e.g. --format alpaca --field instruction=question --field output=answer)",
        **where,
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
            if not isinstance(m, Mapping) or not isinstance(m.get("role"), str) or not isinstance(_content(m), str):
                raise InputError(what=f"'{col('messages')}[{i}]' must be an object with string 'role' and 'content'", **where)
            if m["role"] not in OPENAI_ROLES:
                raise InputError(what=f"'{col('messages')}[{i}]' has unknown role '{m['role']}'", **where)
    if fmt == "alpaca" and "history" in f:
        for i, pair in enumerate(f["history"]):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(isinstance(x, str) for x in pair):
                raise InputError(what=f"'{col('history')}[{i}]' must be a [user, assistant] pair of strings", **where)


def _content(m: Mapping[str, Any]) -> Any:
    return _message_text(m) if m.get("role") == "assistant" else m.get("content")


def _check_turns(turns: list[Turn], where: dict) -> None:
    assistant = [t for t in turns if t.role == "assistant"]
    if not assistant:
        raise InputError(what="no assistant turn (nothing to learn from)", **where)
    if not assistant[-1].content.strip():
        raise EmptyResponseError(what="empty response (pass --skip-empty to leave such rows out)", **where)
    if not any(t.role == "user" and t.content.strip() for t in turns):
        raise InputError(what="empty instruction", **where)
