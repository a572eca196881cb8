"""Evaluation tasks read from local files: what ``shedkit eval --task FILE`` accepts.

A task file is one of:
- instruction rows (Alpaca, Dolly, ShareGPT, OpenAI, prompt/completion; any container the
  data layer reads) -> metric ``loss``: the mean response-token loss (token-weighted over all
  rows, nats; lower is better), plus ``row_mean_loss``;
- ``{query, choices, gold}`` rows (ARC/OpenBookQA as llm-foundry ships them) -> ``acc`` and
  ``acc_norm`` by log-likelihood, as lm-evaluation-harness computes them (see
  ``shedkit.models.objectives``);
- an MMLU CSV (columns ``question, choice0..choice3, answer``, answer 0-3 or A-D; the
  original headerless hendrycks files work too) or a directory of them -> ``acc``/``acc_norm``.

MMLU items are converted with lm-evaluation-harness's default (zero-shot) MMLU prompt:

    The following are multiple choice questions (with answers) about {subject}.\\n\\n
    {question.strip()}\\nA. {choice0}\\nB. {choice1}\\nC. {choice2}\\nD. {choice3}\\nAnswer:

with choices ``" A" .. " D"`` (the letter after lm-eval's target delimiter, a space). The
subject is the file name less its ``_test``/``_dev``/``_val`` suffix, underscores as spaces
(``college_biology_test.csv`` -> "college biology"). Since every choice is one letter,
``acc_norm`` equals ``acc`` on MMLU. A directory is one task over all its CSVs (sorted by
name), so ``acc`` there is the micro average over questions, and per-subject results are kept
in ``subtasks``.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from shedkit.errors import InputError, ShedkitError

MMLU_COLUMNS = ("question", "choice0", "choice1", "choice2", "choice3", "answer")
MMLU_LETTERS = ("A", "B", "C", "D")
MMLU_DESCRIPTION = "The following are multiple choice questions (with answers) about {subject}.\n\n"


@dataclass(frozen=True)
class Task:
    """One evaluation task: a name, where it came from, and its rows as a model-layer DevSet."""

    name: str
    source: str
    dev: object  # shedkit.models.DevSet (records for 'loss', MC items for 'mc')
    subtasks: tuple[tuple[str, int], ...] = ()  # (name, number of items) for a directory of MMLU CSVs

    @property
    def kind(self) -> str:
        return self.dev.kind  # "records" or "mc"

    @property
    def metrics(self) -> tuple[str, ...]:
        return ("loss", "row_mean_loss") if self.kind == "records" else ("acc", "acc_norm")

    def __len__(self) -> int:
        return len(self.dev)

    def fingerprint(self) -> str:
        return self.dev.fingerprint()

    def head(self, n: int | None) -> "Task":
        """The first ``n`` rows (all when ``n`` is None or larger than the task)."""
        if n is None or n >= len(self):
            return self
        from shedkit.models.objectives import DevSet

        dev = self.dev
        cut = DevSet(records=dev.records[:n], items=dev.items[:n], source=dev.source)
        subtasks, left = [], n
        for name, size in self.subtasks:
            if left <= 0:
                break
            subtasks.append((name, min(size, left)))
            left -= size
        return Task(self.name, self.source, cut, tuple(subtasks))


def task_name(path: str | os.PathLike) -> str:
    """``target_alpaca_test.jsonl`` -> ``alpaca_test``; ``mmlu/test`` -> ``mmlu_test``."""
    p = Path(path)
    name = p.name if p.is_dir() else p.name.split(".")[0]
    if p.is_dir() and p.parent.name:
        name = f"{p.parent.name}_{name}" if name in ("test", "dev", "val", "validation") else name
    return name.removeprefix("target_")


# -- MMLU ------------------------------------------------------------------------------------

def mmlu_subject(path: str | os.PathLike) -> str:
    stem = Path(path).stem
    for suffix in ("_test", "_dev", "_val", "_validation"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return stem.replace("_", " ")


def mmlu_prompt(question: str, choices: Sequence[str], subject: str | None = None) -> str:
    """lm-evaluation-harness's zero-shot MMLU context (description + question + lettered choices)."""
    head = MMLU_DESCRIPTION.format(subject=subject) if subject else ""
    lines = [question.strip()] + [f"{letter}. {choice}" for letter, choice in zip(MMLU_LETTERS, choices)]
    return head + "\n".join(lines) + "\nAnswer:"


def is_mmlu_csv(path: str | os.PathLike) -> bool:
    p = Path(path)
    if p.suffix.lower() != ".csv" or not p.is_file():
        return False
    with open(p, newline="", encoding="utf-8") as fh:
        first = next(csv.reader(fh), None)
    if first is None:
        return False
    if [c.strip().lower() for c in first] == list(MMLU_COLUMNS):
        return True
    return len(first) == 6 and first[5].strip().upper() in MMLU_LETTERS  # headerless hendrycks file


def read_mmlu_csv(path: str | os.PathLike, description: bool = True) -> list:
    """MC items (``shedkit.models.MCItem``) from one MMLU CSV, in file order."""
    from shedkit.models.objectives import MCItem

    path = Path(path)
    text = path.read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if not rows:
        raise InputError(path, "the MMLU file is empty")
    start = 1 if [c.strip().lower() for c in rows[0]] == list(MMLU_COLUMNS) else 0
    subject = mmlu_subject(path) if description else None
    items = []
    for i, row in enumerate(rows[start:], start=start + 1):  # i = 1-based CSV record number
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != 6:
            raise InputError(path, f"an MMLU row needs 6 columns {MMLU_COLUMNS}, found {len(row)}", row=i)
        answer = row[5].strip()
        if answer.upper() in MMLU_LETTERS:
            gold = MMLU_LETTERS.index(answer.upper())
        elif answer in ("0", "1", "2", "3"):
            gold = int(answer)
        else:
            raise InputError(path, f"'answer' must be 0-3 or A-D, not {answer!r}", row=i)
        items.append(MCItem(mmlu_prompt(row[0], row[1:5], subject), MMLU_LETTERS, gold))
    if not items:
        raise InputError(path, "the MMLU file has no questions")
    return items


# -- loading ---------------------------------------------------------------------------------

def load_task(path: str | os.PathLike, name: str | None = None, *, format: str | None = None,
              mmlu_description: bool = True) -> Task:
    """A Task from a file (instruction rows, MC rows, an MMLU CSV) or a directory of MMLU CSVs."""
    from shedkit.models.objectives import DevSet, read_dev

    p = Path(path)
    if not p.exists():
        raise ShedkitError(f"task file {p} not found")
    name = name or task_name(p)
    if p.is_dir():
        csvs = sorted(f for f in p.iterdir() if f.suffix.lower() == ".csv")
        if not csvs or not all(is_mmlu_csv(f) for f in csvs):
            raise ShedkitError(f"{p}: a task directory must hold MMLU CSV files (columns {', '.join(MMLU_COLUMNS)})")
        items, subtasks = [], []
        for f in csvs:
            part = read_mmlu_csv(f, mmlu_description)
            items += part
            subtasks.append((f.stem, len(part)))
        return Task(name, str(p), DevSet(items=tuple(items), source=str(p)), tuple(subtasks))
    if is_mmlu_csv(p):
        return Task(name, str(p), DevSet(items=tuple(read_mmlu_csv(p, mmlu_description)), source=str(p)))
    return Task(name, str(p), read_dev(p, format=format))


def load_tasks(paths: Sequence[str | os.PathLike], **kw) -> list[Task]:
    """Tasks for several files; equal names get a numeric suffix so results never collide."""
    tasks, seen = [], {}
    for p in paths:
        task = load_task(p, **kw)
        if task.name in seen:
            seen[task.name] += 1
            task = Task(f"{task.name}_{seen[task.name]}", task.source, task.dev, task.subtasks)
        else:
            seen[task.name] = 1
        tasks.append(task)
    if not tasks:
        raise ShedkitError("no task given: pass --task FILE (repeatable)")
    return tasks

