"""`shedkit report DIR [--by COLUMN ...]`: rebuild DIR/report.html from the run directory."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def report_command(
    run_dir: Path = typer.Argument(..., metavar="DIR", help="Run directory written by `shedkit select --out DIR`."),
    by: Optional[List[str]] = typer.Option(None, "--by", help="Also show the subset's composition by this column of the pool rows (repeatable)."),
) -> None:
    """Rebuild DIR/report.html from DIR's manifest.json, scores.csv and work/ files."""
    from rich.console import Console
    from rich.text import Text

    from shedkit.data.containers import atomic_write_text
    from shedkit.report.html import REPORT_NAME, build_report

    report = build_report(run_dir, by=by or ())
    path = atomic_write_text(run_dir / REPORT_NAME, report.html)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    for problem in report.problems:
        err.print(Text("note: ", style="yellow") + Text(problem))
    Console(highlight=False, soft_wrap=True).print(Text(str(path)))


def register(app: typer.Typer) -> None:
    app.command("report", help="Rebuild a run's report.html (optionally with --by COLUMN).")(report_command)
