#!/usr/bin/env python3
"""Build the noisy-mix-v2 benchmark suite (seeded; the same --seed writes the same bytes).

    python bench/suites/make_noisy_mix_v2.py [OUT] [--seed 0] [--shared ../shared]

OUT defaults to ../bench-out/suites/noisy-mix-v2 beside the checkout; the data is never committed.
Reads the public data in ../shared/data and noisy-mix-v1 in ../shared/bench/noisy-mix-v1 (every
instruction used by v1 is left out, so v2 shares no Alpaca or GSM8K row with v1).

Pool: 3,000 Alpaca-format rows: alpaca 1,200, lima 650, gsm8k 850, sharegpt 300 (identity
chit-chat: clean but low value); multi-turn rows carry "history": [[user, assistant], ...].
690 rows (23%) are corrupted in ways a per-row loss or IFD filter cannot easily see:

  wrong_step      120 gsm8k      one annotated calculation step uses a changed operand; its
                                 result, the text after it and the final "#### N" follow it
  swapped         150 (75 pairs) outputs swapped between the most similar questions of one
                                 source (content-word Jaccard of instruction + input, greedy, no
                                 reuse): 45 alpaca pairs, 30 gsm8k pairs; "group": "swap-<src>-<k>"
  near_duplicate  150 alpaca     a flood: 3 seed rows, each with 50 reworded copies ("group":
                                 "flood-<k>" on the seed, labelled clean, and on its 50 copies)
  off_topic       150            100 alpaca + 50 lima: the output of the 5th-20th most similar row
                                 of the same source (mean TF-IDF cosine of question and answer),
                                 for rows in the densest quarter of neighbourhoods
  refusal         120            80 alpaca + 25 lima + 15 gsm8k: one of 16 fluent refusals or
                                 non-answers, 6 of them quoting the instruction's first words

Each corrupted row gets one kind only; "swapped", "off_topic" and "refusal" rows are single-turn.

Targets (clean, disjoint from the pool, from each other and from v1 by normalised instruction):
alpaca dev 100 / test 200, lima dev 50 / test 150 (single-turn rows), gsm8k dev 100 (train) /
test 200 (test.jsonl), mixed dev 100 (40 alpaca + 30 lima + 30 gsm8k from those dev sets; no
mixed test file: meta.json "mixed_test" makes the bench average the three test losses), and
arc_easy test 300 / dev 100 (a seeded sample of eval/arc_easy.jsonl, lines copied as they are).

Standard library plus numpy only; runs in a few seconds.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections import Counter
from fractions import Fraction
from pathlib import Path

import numpy as np

NAME = "noisy-mix-v2"
SCRIPT = "bench/suites/make_noisy_mix_v2.py"
REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
DEFAULT_OUT = REPO.parent / "bench-out" / "suites" / NAME

SOURCES = ("alpaca", "lima", "gsm8k", "sharegpt")
POOL_ROWS = {"alpaca": 1200, "lima": 650, "gsm8k": 850, "sharegpt": 300}  # totals, corrupted rows included
TARGET_ROWS = {"alpaca": (100, 200), "lima": (50, 150), "gsm8k": (100, 200)}  # (dev, test)
MIXED_DEV = {"alpaca": 40, "lima": 30, "gsm8k": 30}
MIXED_TEST = ["alpaca", "lima", "gsm8k"]
ARC_ROWS = (100, 300)  # (dev, test)
FLOOD_SEEDS, FLOOD_COPIES = 3, 50
SWAP_PAIRS = {"alpaca": 45, "gsm8k": 30}
WRONG_STEP = {"gsm8k": 120}
OFF_TOPIC = {"alpaca": 100, "lima": 50}
OFF_TOPIC_RANKS = (5, 20)  # the donor's similarity rank among the row's neighbours (1 = nearest)
REFUSAL = {"alpaca": 80, "lima": 25, "gsm8k": 15}
LABELS = ("clean", "wrong_step", "swapped", "near_duplicate", "off_topic", "refusal")


# -- text helpers -----------------------------------------------------------------------------

def norm(text: str) -> str:
    """The normalised instruction used for every overlap check: lower case, word characters only."""
    return " ".join(re.findall(r"\w+", str(text).lower()))


STOP = frozenset(
    "a an the of to in on for and or is are was were be been it its this that these those with as by at from "
    "what which who how why when where do does did can could would should will i you your me my we our they "
    "their he she his her them us about into than then so if not no yes there here all any each some".split()
)


# words that say what to do, not what about: left out of the topic similarity of off_topic
TASK_WORDS = frozenset(
    "given following find write create generate describe explain name list make give provide identify tell "
    "sentence sentences text word words example examples one two three four five six seven ten number "
    "new use using based way ways type types following below above something someone get know need want "
    "please help question answer rewrite edit compose suggest come up output input".split()
)


def tokens(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower())) - STOP


def jaccard(texts: list[str]) -> np.ndarray:
    """Token-set Jaccard similarity, n x n, diagonal -1. Intersections are exact integer sums,
    so the matrix (and every ranking on it) is the same on any machine."""
    sets = [tokens(t) for t in texts]
    vocab = {w: i for i, w in enumerate(sorted(set().union(*sets)))}
    x = np.zeros((len(sets), max(1, len(vocab))), dtype=np.float32)
    for i, s in enumerate(sets):
        x[i, [vocab[w] for w in s]] = 1.0
    inter = (x @ x.T).astype(np.float64)
    size = x.sum(axis=1).astype(np.float64)
    union = size[:, None] + size[None, :] - inter
    sim = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    np.fill_diagonal(sim, -1.0)
    return sim


def tfidf_cosine(texts: list[str]) -> np.ndarray:
    """TF-IDF (sublinear tf) cosine similarity, n x n, diagonal -1, rounded to 6 places so that
    rankings do not hinge on the last bits of a BLAS sum."""
    counts = [Counter(re.findall(r"[a-z][a-z0-9]+", t.lower())) for t in texts]  # words, not bare numbers
    for c in counts:
        for w in (STOP | TASK_WORDS) & c.keys():
            del c[w]
    df = Counter(w for c in counts for w in c)
    n = len(texts)
    idf = {w: np.log((1 + n) / (1 + d)) + 1 for w, d in df.items()}
    shared = sorted(w for w, d in df.items() if d > 1)  # a word in one row only adds nothing to a dot product
    col = {w: i for i, w in enumerate(shared)}
    x = np.zeros((n, max(1, len(shared))), dtype=np.float64)
    for i, c in enumerate(counts):
        weights = {w: (1 + np.log(k)) * idf[w] for w, k in c.items()}
        length = np.sqrt(sum(v * v for v in weights.values())) or 1.0
        for w, v in weights.items():
            if w in col:
                x[i, col[w]] = v / length
    sim = np.round(x @ x.T, 6)
    np.fill_diagonal(sim, -1.0)
    return sim


def ranked(sim_row: np.ndarray) -> list[int]:
    """Indices by decreasing similarity, ties by index (deterministic)."""
    return [int(j) for j in np.lexsort((np.arange(len(sim_row)), -sim_row))]


# -- safe arithmetic (GSM8K calculator annotations) -------------------------------------------

_TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d*)?|\.\d+)|(.))")


def safe_eval(expr: str) -> Fraction:
    """Exact value of an arithmetic expression: numbers, + - * /, unary +/-, parentheses.
    Anything else (names, **, %, commas, ...) raises ValueError. Never calls eval()."""
    if len(expr) > 200:
        raise ValueError("expression too long")
    toks: list[tuple[str, str]] = []
    for m in _TOKEN.finditer(expr):
        if m.group(1) is not None:
            toks.append(("num", m.group(1)))
        elif m.group(2) is not None:
            if m.group(2) not in "+-*/()":
                raise ValueError(f"unexpected {m.group(2)!r} in {expr!r}")
            toks.append(("op", m.group(2)))
    pos = 0

    def peek() -> str | None:
        return toks[pos][1] if pos < len(toks) and toks[pos][0] == "op" else None

    def take() -> tuple[str, str]:
        nonlocal pos
        if pos >= len(toks):
            raise ValueError(f"unexpected end of {expr!r}")
        pos += 1
        return toks[pos - 1]

    def expression(depth: int) -> Fraction:
        value = term(depth)
        while peek() in ("+", "-"):
            op = take()[1]
            rhs = term(depth)
            value = value + rhs if op == "+" else value - rhs
        return value

    def term(depth: int) -> Fraction:
        value = factor(depth)
        while peek() in ("*", "/"):
            op = take()[1]
            rhs = factor(depth)
            if op == "*":
                value = value * rhs
            elif rhs == 0:
                raise ValueError(f"division by zero in {expr!r}")
            else:
                value = value / rhs
        return value

    def factor(depth: int) -> Fraction:
        if depth > 50:
            raise ValueError("expression nested too deeply")
        kind, text = take()
        if kind == "num":
            return Fraction(text)
        if text in ("+", "-"):
            value = factor(depth + 1)
            return value if text == "+" else -value
        if text == "(":
            value = expression(depth + 1)
            if take() != ("op", ")"):
                raise ValueError(f"unbalanced parentheses in {expr!r}")
            return value
        raise ValueError(f"unexpected {text!r} in {expr!r}")

    value = expression(0)
    if pos != len(toks):
        raise ValueError(f"trailing input in {expr!r}")
    return value


def parse_number(text: str) -> Fraction:
    """A written number ('1,250', '$12', '0.5') as an exact Fraction; ValueError otherwise."""
    t = str(text).strip().replace(",", "").lstrip("$")
    if not re.fullmatch(r"-?(\d+(\.\d*)?|\.\d+)", t):
        raise ValueError(f"not a number: {text!r}")
    return Fraction(t)


def is_clean(v: Fraction) -> bool:
    """An integer or a decimal with at most two places."""
    return (v * 100).denominator == 1


def fmt_number(v: Fraction, comma: bool = False) -> str:
    sign = "-" if v < 0 else ""
    whole, cents = divmod(int(abs(v) * 100), 100)
    head = f"{whole:,}" if comma else str(whole)
    return sign + head + (f".{cents:02d}".rstrip("0") if cents else "")


ANNOTATION = re.compile(r"<<([^<>=]*)=([^<>]*)>>")
FINAL = re.compile(r"\n####\s*([^\n]+?)\s*$")
NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?![\w])")
LITERAL = re.compile(r"\d+(?:\.\d*)?|\.\d+")


def annotations_ok(answer: str) -> bool:
    """Every <<expr=r>> in ``answer`` evaluates exactly to r."""
    try:
        return all(safe_eval(e) == parse_number(r) for e, r in ANNOTATION.findall(answer))
    except ValueError:
        return False


def final_answer(answer: str) -> Fraction | None:
    m = FINAL.search(answer)
    try:
        return parse_number(m.group(1)) if m else None
    except ValueError:
        return None


def _numbers(text: str) -> list[tuple[int, int, Fraction]]:
    out = []
    for m in NUMBER.finditer(text):
        out.append((m.start(), m.end(), parse_number(m.group(0))))
    return out


def wrong_step(answer: str, rng: random.Random) -> str | None:
    """``answer`` with one calculation step wrong and everything after it consistent with it,
    or None when the row does not qualify (see the module docstring)."""
    final = final_answer(answer)
    anns = list(ANNOTATION.finditer(answer))
    if final is None or not anns or not annotations_ok(answer):
        return None
    hits = [a for a in anns if parse_number(a.group(2)) == final]
    if not hits or hits[-1] is not anns[-1]:  # the answer's step must be the last one: trivial propagation
        return None
    ann = anns[-1]
    expr, old_r = ann.group(1), ann.group(2)
    old = parse_number(old_r)
    literals = list(LITERAL.finditer(expr))
    line_start = answer.rfind("\n", 0, ann.start()) + 1
    seg_start = max(line_start, anns[-2].end() if len(anns) > 1 else 0)
    segment = answer[seg_start:ann.start()]
    seen = _numbers(segment)
    order = list(range(len(literals)))
    rng.shuffle(order)
    for k in order:
        lit = literals[k]
        value = Fraction(lit.group(0))
        if value.denominator == 1:
            changes = [value + d for d in (1, 2, 3, -1, -2, -3)] + ([value * 2] if 2 <= value <= 12 else [])
        else:
            changes = [value + d for d in (1, 2, -1)]
        rng.shuffle(changes)
        for new_operand in changes:
            if new_operand <= 0:
                continue
            new_expr = expr[: lit.start()] + fmt_number(new_operand) + expr[lit.end():]
            try:
                new = safe_eval(new_expr)
            except ValueError:
                continue
            if new == old or new < 0 or not is_clean(new) or (old.denominator == 1) != (new.denominator == 1):
                continue
            # the visible operands just before the annotation: the expression's literals, in order
            values = [Fraction(m.group(0)) for m in literals]
            tail = seen[-len(values):] if len(seen) >= len(values) else []
            visible = segment
            if tail and [v for _, _, v in tail] == values:
                s, e, _ = tail[k]
                visible = segment[:s] + fmt_number(new_operand, "," in segment[s:e]) + segment[e:]
            elif any(v == value for _, _, v in seen):
                continue  # the operand is written before the step but not aligned: ambiguous, skip
            after = answer[ann.end():]
            if not after.startswith(old_r):
                return None
            m = FINAL.search(after)
            body, final_text = after[len(old_r): m.start()], m.group(1)
            new_text = fmt_number(new)
            body = NUMBER.sub(lambda n: fmt_number(new, "," in n.group(0)) if parse_number(n.group(0)) == old else n.group(0), body)
            out = (answer[:seg_start] + visible + f"<<{new_expr}={new_text}>>" + new_text + body
                   + "\n#### " + fmt_number(new, "," in final_text))
            if annotations_ok(out) and final_answer(out) == new != final:
                return out
    return None


# -- rewordings and refusals ------------------------------------------------------------------

PREFIXES = [  # (prefix, lower-case the instruction's first letter, ends as a question)
    ("", False, False), ("Please ", True, False), ("Please, ", True, False), ("Could you ", True, True),
    ("Can you ", True, True), ("Would you ", True, True), ("Could you please ", True, True),
    ("I need you to ", True, False), ("I'd like you to ", True, False), ("Kindly ", True, False),
    ("Quick question: ", False, False), ("Task: ", False, False), ("Hey, can you ", True, True),
    ("Help me out: ", False, False), ("Hi! Please ", True, False),
]
SYNONYMS = {
    "generate": ["produce", "come up with"], "write": ["compose", "draft"], "create": ["make", "put together"],
    "describe": ["explain", "outline"], "explain": ["describe", "clarify"], "give": ["provide", "offer"],
    "provide": ["give", "offer"], "suggest": ["propose", "recommend"], "compose": ["write"], "design": ["create"],
    "list": ["name"], "name": ["list"], "short": ["brief"], "brief": ["short"], "story": ["tale"],
    "examples": ["instances"], "ways": ["methods"], "important": ["significant"], "good": ["great"],
    "different": ["distinct"], "make": ["create"], "summarize": ["sum up"], "identify": ["find"], "find": ["identify"],
}
ENDINGS = [".", "", ".", "!"]
TRAILERS = ["I hope this helps.", "Hope this helps!", "Let me know if you need anything else.",
            "I hope this is useful.", "Feel free to ask if you have more questions."]
IMPERATIVE = ("Generate", "Write", "Describe", "Explain", "Create", "Compose", "Suggest", "Give", "Provide",
              "Design", "Make", "List", "Summarize", "Come")


def reword(instruction: str, rng: random.Random) -> str:
    body = instruction.strip().rstrip(".!?")
    words = body.split(" ")
    swappable = [i for i, w in enumerate(words) if w.lower() in SYNONYMS]
    if swappable and rng.random() < 0.6:
        i = rng.choice(swappable)
        new = rng.choice(SYNONYMS[words[i].lower()])
        words[i] = new[0].upper() + new[1:] if words[i][0].isupper() else new
        body = " ".join(words)
    prefix, lower, question = rng.choice(PREFIXES)
    if lower:
        body = body[0].lower() + body[1:]
    ending = "?" if question and rng.random() < 0.7 else rng.choice(ENDINGS)
    text = prefix + body + ending
    case = rng.random()
    if case < 0.15:
        text = text.lower()
    elif case < 0.2:
        text = text[0].lower() + text[1:]
    space = rng.random()
    if space < 0.15:
        text += " "
    elif space < 0.3:
        gaps = [m.start() for m in re.finditer(" ", text)]
        if gaps:
            g = rng.choice(gaps)
            text = text[:g] + "  " + text[g + 1:]
    elif space < 0.37:
        text = " " + text
    return text


REFUSALS = [
    "I'm sorry, but I can't help with requests like \"{topic}\".",
    "I'm sorry, but I can't help with \"{topic}\". If you have a different question, I'd be happy to try.",
    "Unfortunately, I'm not able to answer \"{topic}\" right now. Please try rephrasing your request, or ask me something else.",
    "I'd rather not give an answer to \"{topic}\". There are too many factors involved, and anything I said might be misleading.",
    "I apologize, but questions such as \"{topic}\" fall outside of what I can help with. Is there anything else I can do for you?",
    "Thanks for asking about \"{topic}\". That's a great question, but I don't have enough information to give you a reliable answer.",
    "Unfortunately, I am not able to provide that information.",
    "As an AI language model, I don't have the ability to do that. Please consult a qualified professional for help with this.",
    "That's an interesting question! Unfortunately, I don't have enough information to give a reliable answer. You may want to consult other sources.",
    "Thank you for your question. However, this request falls outside of what I can help with.",
    "I'm not able to complete this task.",
    "Sorry, I don't know the answer to that one.",
    "This is a complex topic, and the answer depends on many different factors. It would be best to research it further on your own. Good luck!",
    "Before I can answer, I would need more details about what you are looking for. Could you clarify your request?",
    "I don't feel comfortable responding to that request.",
    "There is no single correct answer to this. Different people will approach it in different ways, so it is really up to you to decide.",
]


def refusal(instruction: str, rng: random.Random) -> str:
    template = rng.choice(REFUSALS)
    words = instruction.replace('"', "'").split()
    n = rng.randint(3, 6)
    topic = " ".join(words[:n]).rstrip(".,;:!?'")
    if len(words) > n:
        topic += "..."
    return template.format(topic=topic)


# -- reading the sources ----------------------------------------------------------------------

def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def v1_keys(v1: Path) -> tuple[set[str], set[str]]:
    """Normalised instructions and ARC queries of every noisy-mix-v1 file."""
    inst, queries = set(), set()
    for p in sorted(v1.glob("*.jsonl")):
        for row in read_jsonl(p):
            if "instruction" in row:
                inst.add(norm(row["instruction"]))
            elif "query" in row:
                queries.add(norm(row["query"]))
    return inst, queries


def alpaca_row(instruction: str, output: str, input: str = "", history=None) -> dict:
    row = {"instruction": instruction, "input": input, "output": output}
    if history:
        row["history"] = [[str(u), str(a)] for u, a in history]
    return row


def load_sources(data: Path) -> dict[str, list[dict]]:
    alpaca = [alpaca_row(r["instruction"], r["output"], r.get("input") or "")
              for r in json.loads((data / "alpaca" / "alpaca_data_random_5k.json").read_text(encoding="utf-8"))]
    lima = [alpaca_row(r["instruction"], r["output"], r.get("input") or "", r.get("history"))
            for r in json.loads((data / "lima" / "lima.json").read_text(encoding="utf-8"))]
    gsm_train = [alpaca_row(r["question"], r["answer"]) for r in read_jsonl(data / "gsm8k" / "train.jsonl")]
    gsm_test = [alpaca_row(r["question"], r["answer"]) for r in read_jsonl(data / "gsm8k" / "test.jsonl")]
    share = []
    for conv in json.loads((data / "sharegpt" / "dummy_conversation.json").read_text(encoding="utf-8")):
        turns = conv["conversations"]
        if len(turns) < 2 or len(turns) % 2 or any(t["from"] != ("human", "gpt")[i % 2] for i, t in enumerate(turns)):
            continue
        pairs = [[turns[i]["value"], turns[i + 1]["value"]] for i in range(0, len(turns), 2)]
        share.append(alpaca_row(pairs[-1][0], pairs[-1][1], "", pairs[:-1]))
    return {"alpaca": alpaca, "lima": lima, "gsm8k_train": gsm_train, "gsm8k_test": gsm_test, "sharegpt": share}


def usable(rows: list[dict], taken: set[str], dedup: bool = True) -> list[dict]:
    """Rows with a non-empty output and instruction whose normalised instruction is not taken
    (by v1 or an earlier source); with ``dedup``, the first of equal instructions only."""
    out = []
    for row in rows:
        key = norm(row["instruction"])
        if not key or not row["output"].strip() or key in taken:
            continue
        if dedup:
            taken.add(key)
        out.append(row)
    return out


# -- the build --------------------------------------------------------------------------------

class Entry:
    __slots__ = ("row", "source", "label", "group", "original")

    def __init__(self, row: dict, source: str):
        self.row, self.source, self.label, self.group = dict(row), source, "clean", None
        self.original = row["output"]


def take(rng: random.Random, candidates: list[Entry], n: int, what: str) -> list[Entry]:
    if len(candidates) < n:
        raise SystemExit(f"{what}: only {len(candidates)} candidate rows for {n}")
    return rng.sample(candidates, n)


def build(shared: Path, seed: int) -> dict:
    data, v1 = shared / "data", shared / "bench" / "noisy-mix-v1"
    for p in (data, v1):
        if not p.is_dir():
            raise SystemExit(f"{p} not found: the public data lives in ../shared beside the checkout")
    v1_inst, v1_query = v1_keys(v1)
    src = load_sources(data)
    taken = set(v1_inst)
    avail = {name: usable(src[name], taken) for name in ("alpaca", "lima", "gsm8k_train", "gsm8k_test")}
    sharegpt = usable(src["sharegpt"], set(taken), dedup=False)  # pool only: repeats allowed

    def rng(purpose: str) -> random.Random:
        return random.Random(f"{NAME}:{seed}:{purpose}")

    # splits: targets first (test, then dev), the pool from the rest
    targets: dict[str, list[dict]] = {}
    base: dict[str, list[dict]] = {}
    rows = avail["alpaca"][:]
    rng("split:alpaca").shuffle(rows)
    dev_n, test_n = TARGET_ROWS["alpaca"]
    targets["alpaca_test"], targets["alpaca_dev"] = rows[:test_n], rows[test_n: test_n + dev_n]
    base["alpaca"] = rows[test_n + dev_n: test_n + dev_n + POOL_ROWS["alpaca"] - FLOOD_SEEDS * FLOOD_COPIES]

    multi = [r for r in avail["lima"] if r.get("history")]
    single = [r for r in avail["lima"] if not r.get("history")]
    rng("split:lima").shuffle(single)
    dev_n, test_n = TARGET_ROWS["lima"]
    targets["lima_test"], targets["lima_dev"] = single[:test_n], single[test_n: test_n + dev_n]
    base["lima"] = multi + single[test_n + dev_n: test_n + dev_n + POOL_ROWS["lima"] - len(multi)]

    train, test = avail["gsm8k_train"][:], avail["gsm8k_test"][:]
    rng("split:gsm8k").shuffle(train)
    rng("split:gsm8k-test").shuffle(test)
    dev_n, test_n = TARGET_ROWS["gsm8k"]
    targets["gsm8k_dev"], targets["gsm8k_test"] = train[:dev_n], test[:test_n]
    base["gsm8k"] = train[dev_n: dev_n + POOL_ROWS["gsm8k"]]
    base["sharegpt"] = rng("split:sharegpt").sample(sharegpt, POOL_ROWS["sharegpt"])
    for name, rows in base.items():
        want = POOL_ROWS[name] - (FLOOD_SEEDS * FLOOD_COPIES if name == "alpaca" else 0)
        if len(rows) != want:
            raise SystemExit(f"{name}: {len(rows)} usable rows for the pool, {want} needed")

    mix_rng = rng("mixed")
    mixed = [r for name, n in MIXED_DEV.items() for r in targets[f"{name}_dev"][:n]]
    mix_rng.shuffle(mixed)
    targets["mixed_dev"] = mixed

    entries = {name: [Entry(r, name) for r in rows] for name, rows in base.items()}
    free = {name: list(es) for name, es in entries.items()}  # rows still clean and unassigned

    def claim(name: str, chosen: list[Entry]) -> None:
        ids = {id(e) for e in chosen}
        free[name] = [e for e in free[name] if id(e) not in ids]

    # 3. near-duplicate flood: 3 alpaca seeds x 50 reworded copies
    r = rng("flood")
    seeds = take(r, [e for e in free["alpaca"] if not e.row["input"] and e.row["instruction"].split(" ")[0] in IMPERATIVE
                     and 5 <= len(e.row["instruction"].split()) <= 20 and 80 <= len(e.row["output"]) <= 800
                     and not e.row["instruction"].rstrip().endswith("?")], FLOOD_SEEDS, "flood seeds")
    claim("alpaca", seeds)
    flood = []
    for k, seed_entry in enumerate(seeds):
        seed_entry.group = f"flood-{k}"
        variants: list[str] = []
        for _ in range(20000):
            v = reword(seed_entry.row["instruction"], r)
            if v != seed_entry.row["instruction"] and v not in variants:
                variants.append(v)
            if len(variants) == FLOOD_COPIES:
                break
        else:
            raise SystemExit(f"flood-{k}: could not make {FLOOD_COPIES} distinct rewordings")
        for v in variants:
            out = seed_entry.row["output"]
            if r.random() < 0.3:
                out = out.rstrip() + " " + r.choice(TRAILERS)
            e = Entry(alpaca_row(v, out, seed_entry.row["input"]), "alpaca")
            e.original, e.label, e.group = seed_entry.original, "near_duplicate", f"flood-{k}"
            flood.append(e)

    # 2. swapped: greedy most similar instruction pairs of one source, outputs swapped
    for name, n_pairs in SWAP_PAIRS.items():
        cands = free[name]
        sim = jaccard([e.row["instruction"] + " " + e.row["input"] for e in cands])
        iu, ju = np.triu_indices(len(cands), 1)
        vals = sim[iu, ju]
        used: set[int] = set()
        pairs = []
        for t in np.lexsort((ju, iu, -vals)):
            i, j = int(iu[t]), int(ju[t])
            if i in used or j in used:
                continue
            a, b = cands[i], cands[j]
            if a.original.strip() == b.original.strip():
                continue
            if name == "gsm8k" and final_answer(a.original) == final_answer(b.original):
                continue
            pairs.append((a, b))
            used |= {i, j}
            if len(pairs) == n_pairs:
                break
        for k, (a, b) in enumerate(pairs):
            a.row["output"], b.row["output"] = b.original, a.original
            a.label = b.label = "swapped"
            a.group = b.group = f"swap-{name}-{k}"
        claim(name, [e for p in pairs for e in p])

    # 1. wrong_step: one calculation step wrong in GSM8K answers
    r = rng("wrong_step")
    cands = free["gsm8k"][:]
    r.shuffle(cands)
    done = []
    for e in cands:
        new = wrong_step(e.original, r)
        if new is not None:
            e.row["output"], e.label = new, "wrong_step"
            done.append(e)
            if len(done) == WRONG_STEP["gsm8k"]:
                break
    if len(done) != WRONG_STEP["gsm8k"]:
        raise SystemExit(f"wrong_step: only {len(done)} GSM8K rows qualify")
    claim("gsm8k", done)

    # 4. off_topic: the output of a moderately similar row of the same source
    r = rng("off_topic")
    seed_ids = {id(e) for e in seeds}
    for name, n in OFF_TOPIC.items():
        pool_rows = entries[name]
        # topic similarity: the mean of the questions' and the answers' TF-IDF cosines
        sim = (tfidf_cosine([e.row["instruction"] + " " + e.row["input"] for e in pool_rows])
               + tfidf_cosine([e.original for e in pool_rows])) / 2
        index = {id(e): i for i, e in enumerate(pool_rows)}
        options = []  # (row, its neighbours by decreasing similarity)
        for e in free[name]:
            if e.row.get("history"):
                continue
            i = index[id(e)]
            neighbours = [j for j in ranked(sim[i]) if j != i and id(pool_rows[j]) not in seed_ids
                          and pool_rows[j].original.strip() != e.original.strip()][: OFF_TOPIC_RANKS[1]]
            if len(neighbours) == OFF_TOPIC_RANKS[1] and sim[i, neighbours[-1]] > 0:
                options.append((e, neighbours, float(sim[i, neighbours[-1]])))
        # rows in a dense neighbourhood (the top quarter by similarity to the 20th neighbour),
        # so that a rank 5-20 neighbour is still a related question
        options.sort(key=lambda o: -o[2])  # stable: ties keep pool order
        options = options[: max(n, len(options) // 4)]
        chosen = []
        for e, neighbours, _ in take(r, options, n, f"off_topic {name}"):
            donor = pool_rows[neighbours[r.randint(*OFF_TOPIC_RANKS) - 1]]
            e.row["output"], e.label = donor.original, "off_topic"
            chosen.append(e)
        if len(chosen) != n:
            raise SystemExit(f"off_topic {name}: only {len(chosen)} rows qualify")
        claim(name, chosen)

    # 5. refusal
    r = rng("refusal")
    for name, n in REFUSAL.items():
        chosen = take(r, [e for e in free[name] if not e.row.get("history")], n, f"refusal {name}")
        for e in chosen:
            e.row["output"], e.label = refusal(e.row["instruction"], r), "refusal"
        claim(name, chosen)

    pool = [e for name in SOURCES for e in entries[name]] + flood
    rng("shuffle").shuffle(pool)

    arc_lines = [ln for ln in (data / "eval" / "arc_easy.jsonl").read_text(encoding="utf-8").splitlines() if ln.strip()]
    arc_order = list(range(len(arc_lines)))
    rng("arc").shuffle(arc_order)
    dev_n, test_n = ARC_ROWS
    arc = {"arc_easy_test": [arc_lines[i] for i in arc_order[:test_n]],
           "arc_easy_dev": [arc_lines[i] for i in arc_order[test_n: test_n + dev_n]]}
    return {"pool": pool, "targets": targets, "arc": arc, "v1_inst": v1_inst, "v1_query": v1_query}


def check(built: dict) -> None:
    """The suite's invariants; raises SystemExit on a violation (never writes a bad suite)."""
    pool_keys = {norm(e.row["instruction"]) for e in built["pool"]}
    per_source = {}
    for name, rows in built["targets"].items():
        keys = [norm(r["instruction"]) for r in rows]
        if len(set(keys)) != len(keys) or set(keys) & pool_keys:
            raise SystemExit(f"target {name} repeats an instruction or shares one with the pool")
        if name != "mixed_dev":
            per_source[name] = set(keys)
    names = sorted(per_source)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if per_source[a] & per_source[b]:
                raise SystemExit(f"targets {a} and {b} share an instruction")
    dev = set().union(*(per_source[f"{s}_dev"] for s in MIXED_DEV))
    if not {norm(r["instruction"]) for r in built["targets"]["mixed_dev"]} <= dev:
        raise SystemExit("mixed_dev is not drawn from the per-source dev sets")
    if set(built["arc"]["arc_easy_test"]) & set(built["arc"]["arc_easy_dev"]):
        raise SystemExit("arc_easy dev and test share a row")


def dumps(row: dict) -> str:
    return json.dumps(row, ensure_ascii=False) + "\n"


def write(built: dict, out: Path, seed: int) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    pool = built["pool"]
    (out / "pool.jsonl").write_text("".join(dumps(e.row) for e in pool), encoding="utf-8")
    labels = []
    for i, e in enumerate(pool):
        lab = {"line": i, "source": e.source, "label": e.label}
        if e.group:
            lab["group"] = e.group
        labels.append(lab)
    (out / "pool_labels.jsonl").write_text("".join(dumps(r) for r in labels), encoding="utf-8")
    counts = {}
    for name, rows in built["targets"].items():
        (out / f"target_{name}.jsonl").write_text("".join(dumps(r) for r in rows), encoding="utf-8")
        counts[f"target_{name}"] = len(rows)
    for name, lines in built["arc"].items():
        (out / f"target_{name}.jsonl").write_text("".join(ln + "\n" for ln in lines), encoding="utf-8")
        counts[f"target_{name}"] = len(lines)
    order = ["alpaca_dev", "alpaca_test", "lima_dev", "lima_test", "gsm8k_dev", "gsm8k_test", "mixed_dev",
             "arc_easy_dev", "arc_easy_test"]
    counts = {f"target_{k}": counts[f"target_{k}"] for k in order}
    stale = sorted(p.name for p in out.glob("target_*") if p.stem not in counts)
    if stale:
        print(f"warning: {out} also holds {', '.join(stale)} (not written by this script; the bench will read them)",
              file=sys.stderr)

    label_counts = Counter(e.label for e in pool)
    by_source = {s: dict(sorted(Counter(e.label for e in pool if e.source == s).items(),
                                key=lambda kv: LABELS.index(kv[0]))) for s in SOURCES}
    overlap_pool = {s: sum(norm(e.row["instruction"]) in built["v1_inst"] for e in pool if e.source == s) for s in SOURCES}
    overlap_targets = {f"target_{k}": sum(norm(r["instruction"]) in built["v1_inst"] for r in rows)
                       for k, rows in built["targets"].items()}
    overlap_targets.update({f"target_{k}": sum(norm(json.loads(ln)["query"]) in built["v1_query"] for ln in lines)
                            for k, lines in built["arc"].items()})
    meta = {
        "name": NAME,
        "pool_rows": len(pool),
        "labels": {k: label_counts[k] for k in LABELS},
        "sources": {s: sum(e.source == s for e in pool) for s in SOURCES},
        "labels_by_source": by_source,
        "targets": counts,
        "mixed_test": MIXED_TEST,
        "mixed_dev": MIXED_DEV,
        "flood": {"groups": FLOOD_SEEDS, "copies_per_seed": FLOOD_COPIES,
                  "note": "each group: the seed row (label clean) plus 50 reworded copies (near_duplicate)"},
        "seed": seed,
        "script": SCRIPT,
        "v1_overlap": {"pool": overlap_pool, "targets": dict(sorted(overlap_targets.items()))},
        "note": ("3,000-row pool: alpaca 1,200 / lima 650 / gsm8k 850 / sharegpt 300, 23% corrupted in ways a "
                 "per-row loss or IFD filter cannot easily see (wrong GSM8K step, answers swapped between near-identical "
                 "questions, a near-duplicate flood, off-topic answers to related questions, fluent refusals); "
                 "clean dev/test targets disjoint from the pool, from each other and from noisy-mix-v1; "
                 "mixed_test = equal-weight mean of the alpaca, lima and gsm8k test losses; "
                 "arc_easy rows are a fresh seeded sample (not excluded from v1's arc_easy)"),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shared", type=Path, default=SHARED, help=f"the shared data folder (default {SHARED})")
    args = ap.parse_args(argv)
    built = build(args.shared, args.seed)
    check(built)
    meta = write(built, args.out, args.seed)
    print(f"{NAME} (seed {args.seed}) -> {args.out}: {meta['pool_rows']} pool rows, labels {meta['labels']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
