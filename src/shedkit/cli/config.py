"""defaults < YAML (--config) < flags: merge a YAML file's keys with the flags actually given."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from shedkit.errors import ShedkitError
from shedkit.util.registry import close_match


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ShedkitError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ShedkitError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ShedkitError(f"{path}: the config must be a mapping of flag names to values")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def merge_config(ctx, params: dict[str, Any], config_path: str | Path | None) -> dict[str, Any]:
    """Return params where YAML values replace defaults but never flags given on the command line."""
    if not config_path:
        return dict(params)
    data = load_yaml(config_path)
    unknown = sorted(set(data) - set(params))
    if unknown:
        hints = [f"{k} (did you mean {m}?)" if (m := close_match(k, params)) else k for k in unknown]
        raise ShedkitError(f"{config_path}: unknown keys: {', '.join(hints)}")
    merged = dict(params)
    for key, value in data.items():
        if not given_on_command_line(ctx, key):
            merged[key] = value
    return merged


def given_on_command_line(ctx, name: str) -> bool:
    """Whether flag ``name`` was given (on the command line or by environment), not defaulted."""
    # compare by name: typer may vendor its own click, with its own ParameterSource enum
    return getattr(ctx.get_parameter_source(name), "name", None) in ("COMMANDLINE", "ENVIRONMENT")
