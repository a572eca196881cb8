"""Errors that reach the user as one clear message (exit code 2), never a traceback."""

from __future__ import annotations


class ShedkitError(Exception):
    """A problem with the user's input or settings. The CLI prints it and exits with code 2."""

    exit_code = 2


class InputError(ShedkitError):
    """Bad input data: names the file, the line or row, and what is wrong."""

    def __init__(self, path, what: str, line: int | None = None, row: int | None = None):
        where = str(path)
        if line is not None:
            where += f", line {line}"
        elif row is not None:
            where += f", row {row}"
        super().__init__(f"{where}: {what}")
        self.path, self.line, self.row, self.what = path, line, row, what


class MissingDependencyError(ShedkitError):
    """An optional dependency is absent; the message carries the exact install command."""

    def __init__(self, module: str, extra: str, purpose: str = ""):
        why = f" (needed for {purpose})" if purpose else ""
        super().__init__(
            f"the optional dependency '{module}' is not installed{why}; "
            f"install it with: pip install 'shedkit[{extra}]'"
        )


def require(module: str, extra: str, purpose: str = ""):
    """Import an optional module or fail with an install hint (datatrove-style)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised via monkeypatch in tests
        raise MissingDependencyError(module, extra, purpose) from exc
