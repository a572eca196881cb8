"""Method modules import shared helpers from a floor below (``shedkit.pipeline.*``,
``selectors/``, ...), never from each other: only the contract (``methods/base.py``) and the
registry (the ``shedkit.pipeline.methods`` package itself) are shared. The helpers below them
never import a method either. Read from the source with ``ast``, so no import cycle can come
back unnoticed."""

import ast
from pathlib import Path

import shedkit.pipeline.methods as methods_pkg

PACKAGE = "shedkit.pipeline.methods"
METHODS_DIR = Path(methods_pkg.__file__).parent
PIPELINE_DIR = METHODS_DIR.parent
MODULES = {p.stem for p in METHODS_DIR.glob("*.py")} - {"__init__"}
ALLOWED = {"base"}  # the contract every method implements


def imported_method_modules(path: Path, in_methods: bool | None = None) -> list[tuple[int, str]]:
    """``(line, module)`` of every module of the methods package that ``path`` imports, other
    than ``base``: ``import``, ``from ... import``, relative imports (resolved as if the file
    were in the methods package when ``in_methods``; default: where it is), functions' own
    imports."""
    tree = ast.parse(path.read_text(), filename=str(path))
    if in_methods is None:
        in_methods = path.parent == METHODS_DIR
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = (PACKAGE if in_methods else "shedkit.pipeline").split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from shedkit.pipeline.methods import x`: x may be a module of the package
            targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in targets:
            if name.startswith(PACKAGE + "."):
                sub = name[len(PACKAGE) + 1:].split(".")[0]
                if sub in MODULES and sub not in ALLOWED:
                    found.append((node.lineno, f"{PACKAGE}.{sub}"))
    return sorted(set(found))


def test_no_method_module_imports_another():
    assert len(MODULES) >= 10  # the scan sees the method modules
    offenders = {p.name: hits for p in sorted(METHODS_DIR.glob("*.py")) if p.name != "__init__.py"
                 for hits in [imported_method_modules(p)] if hits}
    assert not offenders, (
        "method modules import each other; move the shared helper one floor down "
        f"(src/shedkit/pipeline/<helper>.py): {offenders}")


def test_helpers_below_the_methods_import_no_method():
    offenders = {p.name: hits for p in sorted(PIPELINE_DIR.glob("*.py"))
                 for hits in [imported_method_modules(p)] if hits}
    assert not offenders, f"pipeline helpers import a method module: {offenders}"


def test_the_scan_finds_a_method_import(tmp_path):
    """The check itself: each spelling of a method-to-method import is caught."""
    lines = ["from shedkit.pipeline.methods.lobass import group_labels",
             "from shedkit.pipeline.methods import shed",
             "import shedkit.pipeline.methods.first_order",
             "from .row_filters import ifd_ratio",
             "def f():\n    from shedkit.pipeline.methods.shed_hybrid import run"]
    for k, line in enumerate(lines):
        path = tmp_path / f"m{k}.py"
        path.write_text(line + "\n")
        assert imported_method_modules(path, in_methods=True), line
    fine = tmp_path / "fine.py"
    fine.write_text("from shedkit.pipeline.methods.base import MethodContext\n"
                    "from shedkit.pipeline.methods import method_module\nfrom . import base\n")
    assert not imported_method_modules(fine, in_methods=True)
