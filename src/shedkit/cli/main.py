"""The `shedkit` command. Subcommands live in their own modules; this file only wires them."""

from __future__ import annotations

import importlib
import sys

import typer

from shedkit.errors import ShedkitError

app = typer.Typer(
    name="shedkit",
    help="Curate instruction-tuning datasets: select a small subset that fine-tunes as well as the whole pool.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# modules under shedkit.cli that define register(app); a missing one is skipped
SUBCOMMANDS = ("select", "demo", "env", "cluster", "score", "finetune", "evaluate", "bench", "report")

for _name in SUBCOMMANDS:
    try:
        _module = importlib.import_module(f"shedkit.cli.{_name}")
    except ModuleNotFoundError as _exc:
        if _exc.name != f"shedkit.cli.{_name}":
            raise
        continue
    _module.register(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for a user error, printed without a traceback)."""
    from rich.console import Console

    try:
        app(args=argv if argv is not None else sys.argv[1:], standalone_mode=False)
    except ShedkitError as exc:
        from rich.text import Text

        Console(stderr=True, highlight=False, soft_wrap=True).print(Text("error: ", style="bold red") + Text(str(exc)))
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        Console(stderr=True).print("aborted")
        return 130
    except Exception as exc:  # click usage errors (typer may vendor its own click)
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            return exc.exit_code
        raise
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
