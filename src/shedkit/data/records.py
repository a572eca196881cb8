"""The record: one normalised pool row (chat turns + stable id + the untouched original row).

No torch here: the data layer must stay importable without the model stack.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class Turn:
    role: str  # "system" | "user" | "assistant" | "tool" (a tool's output: context, never a target)
    content: str


@dataclass(frozen=True)
class Record:
    """One example of the pool.

    id      -- stable content hash of the normalised turns (same content -> same id, any format)
    index   -- 0-based position of the row in the input file
    turns   -- the conversation, normalised to system/user/assistant/tool turns
    row     -- the original row exactly as read (never modified)
    """

    id: str
    index: int
    turns: tuple[Turn, ...]
    row: Mapping[str, Any] = field(compare=False, repr=False)

    @property
    def prompt_turns(self) -> tuple[Turn, ...]:
        """Every turn before the last assistant turn."""
        return self.turns[: self._last_assistant()]

    @property
    def response(self) -> str:
        """The last assistant turn's text (the response a single-turn method scores)."""
        return self.turns[self._last_assistant()].content

    @property
    def instruction(self) -> str:
        """The user text that precedes the last response (user turns joined)."""
        return "\n\n".join(t.content for t in self.prompt_turns if t.role == "user")

    @property
    def text(self) -> str:
        """All turns' text joined, system prompts included (embedders and DSIR's n-grams read
        :meth:`embedding_text`, which leaves them out unless asked)."""
        return "\n".join(t.content for t in self.turns)

    def embedding_text(self, include_system: bool = False) -> str:
        """What an embedder (and DSIR's n-gram counts) sees: the turns' text without system
        prompts unless asked. A system prompt shared by many rows would otherwise dominate
        their embeddings, and so the clustering."""
        return "\n".join(t.content for t in self.turns if include_system or t.role != "system")

    def embedding_key(self, include_system: bool = False) -> str:
        """Cache key of :meth:`embedding_text`: the id when the text is all turns (so vectors
        cached by id stay valid), else the id tagged with the variant."""
        if include_system or not any(t.role == "system" for t in self.turns):
            return self.id
        return self.id + "-nosys"

    def _last_assistant(self) -> int:
        for i in range(len(self.turns) - 1, -1, -1):
            if self.turns[i].role == "assistant":
                return i
        raise ValueError(f"record {self.id} has no assistant turn")


def record_id(turns: tuple[Turn, ...]) -> str:
    """sha256 of the canonical JSON of the turns, 16 hex chars (64 bits)."""
    canon = json.dumps([[t.role, t.content] for t in turns], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()[:16]


def make_record(index: int, turns: list[Turn] | tuple[Turn, ...], row: Mapping[str, Any]) -> Record:
    turns = tuple(turns)
    return Record(id=record_id(turns), index=index, turns=turns, row=row)
