"""Flags generated from dataclasses: the one place that turns option fields into typer options.

A field ``max_evals: Optional[int] = opt("Stop after this many fine-tunes.")`` becomes
``--max-evals`` with that help; ``metadata["flags"]`` overrides the spelling
(``("--top-k/--gumbel",)``, ``("--clusters", "-k")``) and ``metadata["cli"] = False`` leaves a
field out. :func:`with_flags` appends the generated parameters to a command function that
takes ``**options``; typer reads the resulting ``__signature__``.
"""

from __future__ import annotations

import inspect
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, List, Optional

import typer


def flag(default: Any, help: str, *, flags: tuple[str, ...] = ()) -> Any:
    """A CLI-only flag with a real default (the shared input / run flags below)."""
    return field(default=default, metadata={"help": help, "flags": tuple(flags), "cli": True})


@dataclass
class InputFlags:
    """How a pool file is read (every command that reads one)."""

    format: Optional[str] = flag(None, "alpaca | dolly | sharegpt | openai | prompt-completion (default: detect).")
    field: Optional[List[str]] = flag(None, "Field mapping CANONICAL=COLUMN, e.g. instruction=question (repeatable).")
    dedup: bool = flag(False, "Drop exact duplicate rows (counted either way).", flags=("--dedup/--no-dedup",))
    skip_empty: bool = flag(False, "Leave out rows with an empty response instead of failing.",
                            flags=("--skip-empty/--no-skip-empty",))


@dataclass
class ConfigFlag:
    config: Optional[Path] = flag(None, "YAML file whose keys are these flags (flags win).")


@dataclass
class CacheFlag:
    cache_dir: Optional[Path] = flag(None, "Shared cache (embeddings, fine-tunes, losses); default $SHEDKIT_CACHE or ~/.cache/shedkit.")


@dataclass
class ThreadsFlag:
    threads: Optional[int] = flag(None, "torch CPU threads (default torch's; 1 is fastest on a shared, busy CPU).")


@dataclass
class RunFlags(ThreadsFlag):
    """Progress and CPU threads of commands that run models."""

    progress: bool = flag(True, "Show progress bars.", flags=("--progress/--no-progress",))


def _score_flags() -> type:
    from shedkit.models.config import ScoreConfig
    from shedkit.pipeline.options import options_from_config

    cls = options_from_config(ScoreConfig, "ScoreFlags")
    cls.panel = "Scoring options"
    return cls


#: every ``ScoreConfig`` field as a flag (``shedkit score``, ``shedkit eval``)
ScoreFlags = _score_flags()


def flag_parameters(classes: Iterable[type], skip: Iterable[str] = (), defaults: dict[str, Any] | None = None,
                    taken: Iterable[str] = (), names: dict[str, tuple[str, ...]] | None = None) -> list[inspect.Parameter]:
    """One keyword parameter per field of ``classes`` (first declaration of a name wins), shown
    in ``--help`` under the name of the group that declares it. ``defaults`` and ``names``
    override a field's default and flag spelling for this command."""
    import typing

    skip, defaults, names, seen = set(skip), dict(defaults or {}), dict(names or {}), set(taken)
    out = []
    for cls in classes:
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            if f.name in seen or f.name in skip or not f.metadata.get("cli", True):
                continue
            seen.add(f.name)
            default = defaults.get(f.name, f.default if f.default is not MISSING else None)
            spelling = names.get(f.name) or f.metadata.get("flags") or ("--" + f.name.replace("_", "-"),)
            option = typer.Option(default, *spelling, help=f.metadata.get("help", ""),
                                  rich_help_panel=_panel(cls, f.name))
            out.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                         annotation=hints[f.name]))
    return out


def _panel(cls: type, name: str) -> str | None:
    """The help panel of field ``name``: the group (base class) that declares it."""
    for base in reversed(cls.__mro__):
        if name in base.__dict__.get("__annotations__", {}):
            if base.__name__ == "Options":  # a method's own options: named by its module
                return f"{base.__module__.rsplit('.', 1)[-1].upper()} options"
            if "panel" in base.__dict__:
                return base.__dict__["panel"]
            label = base.__name__.removesuffix("Options").removesuffix("Flags").removesuffix("Flag")
            return None if label in ("Input", "Config", "Cache", "Run", "Threads") else f"{label} options"
    return None


def with_flags(*classes: type, skip: Iterable[str] = (), defaults: dict[str, Any] | None = None,
               names: dict[str, tuple[str, ...]] | None = None) -> Callable:
    """Decorate ``command(ctx, ..., **options)``: its signature gains the fields of ``classes``."""

    def decorate(func: Callable) -> Callable:
        sig = inspect.signature(func, eval_str=True)
        own = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        extra = flag_parameters(classes, skip=skip, defaults=defaults, taken=[p.name for p in own], names=names)
        func.__signature__ = sig.replace(parameters=[*own, *extra])
        return func

    return decorate
