"""Records -> token ids with per-token target marks, for causal-LM training and scoring.

Format: a custom Jinja chat template when one is given (``chat_template``, rendered by
transformers exactly as a tokenizer's own), else the tokenizer's chat template when it has one
("auto"/"chat"), else the plain template below ("plain" forces it):

    {bos}### System:\\n{content}\\n\\n          (only when the record has a system turn)
    ### User:\\n{content}\\n\\n
    ### Assistant:\\n{content}{eos}\\n\\n

Targets (the tokens whose loss is counted) are the tokens of each assistant turn's content
plus the turn's end marker (``<|im_end|>`` under ChatML, ``{eos}`` under the plain template),
so that a fine-tuned model learns where to stop; ``train_on="last"`` keeps only the last
assistant turn as a target (earlier ones become context). Everything else (system, user and
tool turns, role headers, template boilerplate) is context only. ``groups[i] = k`` marks token ``i`` as a target
belonging to the k-th assistant turn (1-based); ``0`` means not a target. Token 0 is never a
target (nothing precedes it).

Rows longer than ``max_length`` are truncated keeping the response: prompt tokens go first,
from the left (the end of the prompt, next to the response, stays), down to a floor of
``max_length // 4`` prompt tokens; only then is the response cut, from the right.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from shedkit.data.records import Record, Turn
from shedkit.errors import ShedkitError

PLAIN_HEADERS = {"system": "### System:\n", "user": "### User:\n", "assistant": "### Assistant:\n", "tool": "### Tool:\n"}
TRAIN_ON = ("all", "last")


@dataclass(frozen=True)
class Encoded:
    ids: np.ndarray  # int64 token ids
    groups: np.ndarray  # int16: 0 = context, k >= 1 = target token of the k-th assistant turn

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_targets(self) -> int:
        return int(np.count_nonzero(self.groups[1:]))


def read_chat_template(value) -> str:
    """A Jinja chat template's text from a file path (``--chat-template FILE``); text that is
    not a path to a file (it holds ``{%`` or ``{{``) is taken as the template itself."""
    import os

    if not value:
        return ""
    text = str(value)
    if ("{%" in text or "{{" in text) and not os.path.isfile(text):
        return text
    try:
        with open(os.path.expanduser(text), encoding="utf-8") as fh:
            return fh.read()
    except OSError as exc:
        raise ShedkitError(f"--chat-template {text}: cannot read the template file ({exc.strerror})") from None


def encode_options(config) -> dict:
    """The encoding settings a TrainConfig/ScoreConfig carries, as keyword arguments."""
    return {"template": config.template, "train_on": getattr(config, "train_on", "all"),
            "chat_template": getattr(config, "chat_template", "") or None}


def uses_chat_template(tokenizer, template: str = "auto", chat_template: str | None = None) -> bool:
    if chat_template:
        return True
    if template == "plain":
        return False
    has = bool(getattr(tokenizer, "chat_template", None))
    if template == "chat" and not has:
        raise ShedkitError(f"template='chat' but the tokenizer {tokenizer.name_or_path!r} has no chat template; use 'auto' or 'plain'")
    return has


def render(tokenizer, turns: Sequence[Turn], template: str = "auto",
           chat_template: str | None = None) -> tuple[str, list[tuple[int, int]]]:
    """The conversation as text, and the character span of each assistant turn's target
    text (content + end-of-turn marker, trailing whitespace excluded). ``chat_template``: a
    Jinja template's text, used instead of the tokenizer's."""
    if uses_chat_template(tokenizer, template, chat_template):
        return _render_chat(tokenizer, turns, chat_template)
    return _render_plain(tokenizer, turns)


def _render_plain(tokenizer, turns: Sequence[Turn]) -> tuple[str, list[tuple[int, int]]]:
    eos = tokenizer.eos_token or ""
    parts = [tokenizer.bos_token or ""]
    spans = []
    pos = len(parts[0])
    for turn in turns:
        header = PLAIN_HEADERS[turn.role]
        body = turn.content + (eos if turn.role == "assistant" else "")
        if turn.role == "assistant":
            spans.append((pos + len(header), pos + len(header) + len(body)))
        piece = header + body + "\n\n"
        parts.append(piece)
        pos += len(piece)
    return "".join(parts), spans


def _chat(tokenizer, turns: Sequence[Turn], generation_prompt: bool, chat_template: str | None = None) -> str:
    messages = [{"role": t.role, "content": t.content} for t in turns]
    kwargs = {"chat_template": chat_template} if chat_template else {}
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt, **kwargs)
    except Exception as exc:  # jinja2 errors (syntax, raise_exception in the template) reach the user
        if type(exc).__module__.startswith("jinja2"):
            raise ShedkitError(f"the chat template failed to render a conversation: {exc}") from None
        raise


def _render_chat(tokenizer, turns: Sequence[Turn], chat_template: str | None = None) -> tuple[str, list[tuple[int, int]]]:
    def chat(part: Sequence[Turn], generation_prompt: bool) -> str:
        return _chat(tokenizer, part, generation_prompt, chat_template)

    full = chat(turns, False)
    spans = []
    for k, turn in enumerate(turns):
        if turn.role != "assistant":
            continue
        upto = chat(turns[: k + 1], False)
        if not full.startswith(upto):
            raise ShedkitError(
                f"the chat template {_which(tokenizer, chat_template)} does not render a conversation's "
                "prefix as a prefix of the whole; use template='plain'"
            )
        end = len(upto.rstrip())
        start = -1
        if k > 0:
            prefix = chat(turns[:k], True)
            if upto.startswith(prefix):
                start = len(prefix)
        if start < 0:  # e.g. a template that adds a default system prompt before a lone turn
            content = turn.content.strip()
            start = upto.rfind(content, 0, end) if content else end
            if start < 0:
                raise ShedkitError(f"cannot locate an assistant turn in the output of the chat template {_which(tokenizer, chat_template)}; use template='plain'")
            start = min(start, end)
        spans.append((start, end))
    return full, spans


def _which(tokenizer, chat_template: str | None) -> str:
    return "given (--chat-template)" if chat_template else f"of {tokenizer.name_or_path!r}"


def _tokenize_with_spans(tokenizer, text: str, spans: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = np.asarray(enc["input_ids"], dtype=np.int64)
        offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
        groups = np.zeros(len(ids), dtype=np.int16)
        for k, (s, e) in enumerate(spans, start=1):
            if e > s:
                groups[(offsets[:, 0] < e) & (offsets[:, 1] > s)] = k
        return ids, groups
    # slow tokenizers have no offsets: tokenize the pieces between span borders separately
    ids_parts, group_parts, pos = [], [], 0
    for k, (s, e) in enumerate(spans, start=1):
        for piece, g in ((text[pos:s], 0), (text[s:e], k)):
            piece_ids = tokenizer(piece, add_special_tokens=False)["input_ids"] if piece else []
            ids_parts.append(np.asarray(piece_ids, dtype=np.int64))
            group_parts.append(np.full(len(piece_ids), g, dtype=np.int16))
        pos = e
    tail = tokenizer(text[pos:], add_special_tokens=False)["input_ids"] if text[pos:] else []
    ids_parts.append(np.asarray(tail, dtype=np.int64))
    group_parts.append(np.zeros(len(tail), dtype=np.int16))
    return np.concatenate(ids_parts), np.concatenate(group_parts)


def truncate(ids: np.ndarray, groups: np.ndarray, max_length: int) -> Encoded:
    """Cut to ``max_length`` tokens keeping the response (see the module docstring)."""
    groups = groups.copy()
    if len(ids) > max_length:
        targets = np.flatnonzero(groups)
        first = int(targets[0]) if len(targets) else len(ids)
        rest = len(ids) - first
        keep_prompt = min(first, max(max_length - rest, max_length // 4))
        keep_rest = max_length - keep_prompt
        ids = np.concatenate([ids[first - keep_prompt : first], ids[first : first + keep_rest]])
        groups = np.concatenate([groups[first - keep_prompt : first], groups[first : first + keep_rest]])
    if len(groups):
        groups[0] = 0
    return Encoded(ids, groups)


def encode_turns(tokenizer, turns: Sequence[Turn], max_length: int, template: str = "auto",
                 train_on: str = "all", chat_template: str | None = None) -> Encoded:
    """``train_on``: "all" assistant turns are targets, or only the "last" one."""
    if train_on not in TRAIN_ON:
        raise ShedkitError(f"train_on must be one of {TRAIN_ON}, not {train_on!r}")
    text, spans = render(tokenizer, turns, template, chat_template)
    if train_on == "last":
        spans = [(e, e) for s, e in spans[:-1]] + spans[-1:]  # earlier turns: empty spans (context)
    ids, groups = _tokenize_with_spans(tokenizer, text, spans)
    if train_on == "last" and len(spans) > 1:
        groups[groups > 0] = 1
    return truncate(ids, groups, max_length)


def has_empty_response(record: Record) -> bool:
    """True when every assistant turn of the record is empty or whitespace."""
    return all(not t.content.strip() for t in record.turns if t.role == "assistant")


def encode_record(tokenizer, record: Record, max_length: int, template: str = "auto",
                  train_on: str = "all", chat_template: str | None = None) -> Encoded:
    """Every assistant turn is a target (multi-turn rows train and score on all of them), or
    only the last one with ``train_on="last"``; tool turns are context."""
    return encode_turns(tokenizer, record.turns, max_length, template, train_on, chat_template)


def encode_response_alone(tokenizer, record: Record, max_length: int, template: str = "auto",
                          train_on: str = "all", chat_template: str | None = None) -> Encoded:
    """The last response as a conversation of its own (no system/user turns): the IFD
    denominator, "the response's loss without its instruction"."""
    return encode_turns(tokenizer, (Turn("assistant", record.response),), max_length, template, "all", chat_template)


def encode_continuation(tokenizer, context: str, continuation: str, max_length: int) -> Encoded:
    """Context + continuation as lm-evaluation-harness encodes a loglikelihood request: no
    special tokens; trailing spaces of the context move to the continuation; the continuation's
    tokens are those of ``tok(context + continuation)`` after ``len(tok(context))``; an empty
    context becomes the EOS/BOS token; over-long pairs lose tokens from the left."""
    n_space = len(context) - len(context.rstrip(" "))
    if n_space:
        continuation = context[-n_space:] + continuation
        context = context[:-n_space]
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    if context:
        ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
        cont = whole[len(ctx) :]
    else:
        prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        ctx, cont = [prefix], whole
    if not cont:
        raise ShedkitError(f"the continuation {continuation!r} encodes to no tokens")
    ids = np.asarray(ctx + cont, dtype=np.int64)[-max_length:]
    groups = np.zeros(len(ids), dtype=np.int16)
    groups[len(ids) - min(len(cont), len(ids) - 1) :] = 1
    return Encoded(ids, groups)
