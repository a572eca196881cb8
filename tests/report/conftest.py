"""A strict reader for report.html and a hand-made run directory with known contents."""

import base64
import csv
import json
from dataclasses import dataclass, field
from html.parser import HTMLParser

import pytest

VOID = {"meta", "img", "br", "hr", "link", "input", "source", "wbr"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class Section:
    id: str
    heading: str = ""
    imgs: list = field(default_factory=list)
    tables: list = field(default_factory=list)  # each: list of rows, each a list of cell texts
    text: str = ""


class StrictReport(HTMLParser):
    """Balanced tags (void elements aside), every attribute that loads a resource collected,
    and the page's sections with their headings, images and table cells."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.resources, self.tags = [], [], [], []
        self.sections, self.doctype = [], None
        self._row = self._cell = None

    def handle_decl(self, decl):
        self.doctype = decl

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        for name in ("src", "href", "data", "action", "poster"):
            if name in attrs:
                self.resources.append((tag, name, attrs[name]))
        if tag == "section":
            self.sections.append(Section(attrs.get("id", "")))
        sec = self.sections[-1] if self.sections and "section" in self.stack + [tag] else None
        if tag == "img" and sec is not None:
            sec.imgs.append(attrs.get("src", ""))
        if tag == "table" and sec is not None:
            sec.tables.append([])
        if tag == "tr" and sec is not None:
            self._row = []
            sec.tables[-1].append(self._row)
        if tag in ("td", "th"):
            self._cell = []
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}> at {self.getpos()}")
            return
        self.stack.pop()
        if tag in ("td", "th") and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if "section" in self.stack:
            sec = self.sections[-1]
            sec.text += data
            if self.stack[-1] == "h2":
                sec.heading += data


@dataclass
class Report:
    text: str
    parser: StrictReport

    @property
    def sections(self):
        return {s.id: s for s in self.parser.sections}

    @property
    def imgs(self):
        return [src for tag, name, src in self.parser.resources if tag == "img"]


def parse_report(path) -> Report:
    """Parse report.html, asserting the structure is well formed and self-contained."""
    text = path.read_text(encoding="utf-8")
    parser = StrictReport()
    parser.feed(text)
    parser.close()
    assert parser.doctype and parser.doctype.lower() == "doctype html"
    assert not parser.errors, parser.errors
    assert parser.stack == [], f"unclosed tags: {parser.stack}"
    for once in ("html", "head", "body", "main", "title"):
        assert parser.tags.count(once) == 1, once
    assert "script" not in parser.tags and "link" not in parser.tags and "iframe" not in parser.tags
    for tag, name, value in parser.resources:  # only embedded images and in-page anchors
        assert value.startswith("data:image/png;base64,") or value.startswith("#"), (tag, name, value[:80])
    assert "url(" not in text
    for src in parser.resources:
        if src[0] == "img":
            png = base64.b64decode(src[2].split(",", 1)[1], validate=True)
            assert png.startswith(PNG_SIGNATURE)
    for s in parser.sections:
        assert s.id and s.heading, s
    return Report(text, parser)


@pytest.fixture
def read_report():
    return parse_report


def write_run(run_dir, columns: dict, selected: list, manifest: dict | None = None):
    """A run directory with scores.csv (row, id, selected + columns) and a manifest."""
    run_dir.mkdir(parents=True, exist_ok=True)
    n = len(selected)
    with open(run_dir / "scores.csv", "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh, lineterminator="\n")
        out.writerow(["row", "id", "selected", *columns])
        for i in range(n):
            out.writerow([i, f"id{i:04d}", int(selected[i]), *(columns[c][i] for c in columns)])
    base = {
        "shedkit_command": ["shedkit", "select", "pool.jsonl"],
        "pool": {"path": str(run_dir / "missing-pool.jsonl"), "format": "alpaca", "field_map": {}},
        "method": {"name": "shed-qocs", "sampler": "qocs"},
        "config": {"method": "shed-qocs", "seed": 0, "clusters": 4},
        "seed": 0,
        "counts": {"pool": n, "budget": sum(selected), "selected": sum(selected)},
        "environment": {"python": "3.11", "platform": "test", "packages": {"numpy": "2"}, "git": "abc123"},
        "timings": {"load": 0.1, "select": 1.5, "write": 0.01},
        "method_timings": {"embed": 1.0},
    }
    base.update(manifest or {})
    (run_dir / "manifest.json").write_text(json.dumps(base), encoding="utf-8")
    return run_dir


@pytest.fixture
def make_run():
    return write_run
