"""The embedded default pool: arithmetic and string tasks with known answers, a labelled
fraction corrupted (misaligned, truncated, boilerplate, wrong answer), plus clean dev/test
targets. It lets `make demo` run offline with no third-party data, and lets anyone check a
method: a good selection avoids the corrupted rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from shedkit.data.containers import atomic_write_text

WORDS = (
    "planet river garden window silver orange candle forest market yellow pencil basket "
    "rocket winter summer castle dragon butter ladder mirror jungle violin harbor tunnel "
    "anchor bridge copper meadow pillow rabbit saddle temple velvet wagon zephyr almond"
).split()
BOILERPLATE = (
    "I'm sorry, but I cannot help with that request.",
    "As an AI language model, I do not have the ability to answer this.",
    "Thank you for your question! Please let me know if there is anything else.",
    "This is a great question. There are many factors to consider here.",
)
CORRUPTIONS = ("misaligned", "truncated", "boilerplate", "wrong_answer")


def _task(rng: np.random.Generator) -> tuple[str, str, str, callable]:
    """Return (kind, instruction, input, answer) where answer(wrong: bool) -> response text."""
    kind = rng.choice(["add", "sub", "mul", "reverse", "upper", "count", "sort"])
    if kind in ("add", "sub", "mul"):
        a, b = int(rng.integers(2, 99)), int(rng.integers(2, 99))
        op, value = {"add": ("+", a + b), "sub": ("-", a - b), "mul": ("*", a * b)}[kind]
        delta = int(rng.integers(1, 9)) * (1 if rng.random() < 0.5 else -1)
        return "math", f"What is {a} {op} {b}?", "", lambda wrong: f"{a} {op} {b} = {value + delta * wrong}. The answer is {value + delta * wrong}."
    word = str(rng.choice(WORDS))
    if kind == "reverse":
        return "string", "Reverse the letters of the given word.", word, lambda wrong: f"The word '{word}' reversed is '{word[::-1] if not wrong else word[::-1][1:] + word[-1]}'."
    if kind == "upper":
        phrase = f"{word} {rng.choice(WORDS)}"
        return "string", "Convert the text to uppercase.", phrase, lambda wrong: (phrase.upper() if not wrong else phrase.title())
    if kind == "count":
        return "string", f"How many letters are in the word '{word}'?", "", lambda wrong: f"The word '{word}' has {len(word) + wrong} letters."
    items = [str(w) for w in rng.choice(WORDS, size=4, replace=False)]
    out = sorted(items)
    return "string", "Sort these words alphabetically.", ", ".join(items), lambda wrong: ", ".join(out if not wrong else out[::-1]) + "."


def make_pool(n: int = 400, corrupt_fraction: float = 0.25, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Return (rows in Alpaca format, labels {line, kind, label}) with exactly
    round(n * corrupt_fraction) corrupted rows spread over the four corruption kinds."""
    rng = np.random.default_rng(seed)
    tasks = [_task(rng) for _ in range(n)]
    clean = [ans(False) for (_, _, _, ans) in tasks]
    n_bad = int(round(n * corrupt_fraction))
    bad = rng.choice(n, size=n_bad, replace=False)
    kinds = {int(i): CORRUPTIONS[j % len(CORRUPTIONS)] for j, i in enumerate(bad)}
    rows, labels = [], []
    for i, (kind, instruction, inp, ans) in enumerate(tasks):
        label = kinds.get(i, "clean")
        output = clean[i]
        if label == "misaligned":
            output = clean[(i + 1 + int(rng.integers(n - 1))) % n]
        elif label == "truncated":
            words = output.split()
            output = " ".join(words[: max(1, len(words) // 3)])
        elif label == "boilerplate":
            output = str(rng.choice(BOILERPLATE))
        elif label == "wrong_answer":
            output = ans(True)
        rows.append({"instruction": instruction, "input": inp, "output": output})
        labels.append({"line": i, "source": kind, "label": label})
    return rows, labels


def write_demo_data(directory: str | Path, n: int = 400, seed: int = 0, dev_rows: int = 30) -> dict[str, Path]:
    """Write pool.jsonl, pool_labels.jsonl, target_dev.jsonl (clean, ``dev_rows``) and
    target_test.jsonl (clean, 120 rows)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rows, labels = make_pool(n, seed=seed)
    dev, _ = make_pool(dev_rows, corrupt_fraction=0.0, seed=seed + 1)
    test, _ = make_pool(120, corrupt_fraction=0.0, seed=seed + 2)
    files = {"pool": rows, "pool_labels": labels, "target_dev": dev, "target_test": test}
    paths = {}
    for name, data in files.items():
        paths[name] = directory / f"{name}.jsonl"
        atomic_write_text(paths[name], "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in data))
    return paths


def corrupted_fraction(labels_path: str | Path, rows: list[int]) -> dict[str, float]:
    """Fraction of the selected input rows per label (clean and each corruption kind)."""
    labels = [json.loads(line)["label"] for line in Path(labels_path).read_text().splitlines() if line.strip()]
    picked = [labels[r] for r in rows]
    out = {k: picked.count(k) / max(1, len(picked)) for k in sorted(set(labels))}
    out["corrupted"] = 1.0 - out.get("clean", 0.0)
    return out
