"""The layout the README draws, checked: one-way dependencies and small units.

Read from the source with `ast`, so a new module that breaks a rule fails here, with
its name, rather than in a review.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCTION = ["events", "reservations", "payments", "http_api", "config"]
MAX_FILE_LINES = 400
MAX_CLASS_LINES = 250
MAX_FUNCTION_LINES = 60

# Which of events' subpackages each may import (besides itself, the models and the
# fields): dependencies point one way, from the products down to the core.
EVENTS_LAYERS: dict[str, set[str]] = {
    "core": set(),
    "observability": {"core"},
    "relay": {"core", "observability"},
    "cdc": {"core"},
    "consumer": {"core", "observability"},
    "maintenance": {"core", "observability"},
    "dead_letters": {"core", "observability", "consumer"},
}
SUBPACKAGES = set(EVENTS_LAYERS)


def production_files() -> list[Path]:
    return sorted(
        path
        for package in PRODUCTION
        for path in (ROOT / package).rglob("*.py")
        if "migrations" not in path.parts
    )


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def subpackage_of(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) >= 2 and parts[0] == "events" and parts[1] in SUBPACKAGES:
        return parts[1]
    return None


def test_every_events_subpackage_says_its_job() -> None:
    for name in SUBPACKAGES:
        init = ROOT / "events" / name / "__init__.py"
        assert ast.get_docstring(ast.parse(init.read_text())), (
            f"{init} has no docstring"
        )


@pytest.mark.parametrize("layer", sorted(EVENTS_LAYERS))
def test_events_subpackages_depend_one_way(layer: str) -> None:
    allowed = EVENTS_LAYERS[layer] | {layer}
    wrong = {
        f"{path.relative_to(ROOT)} imports {module}"
        for path in (ROOT / "events" / layer).rglob("*.py")
        for module in imported_modules(path)
        if (target := subpackage_of(module)) is not None and target not in allowed
    }
    assert not wrong, sorted(wrong)


def test_the_models_import_no_subpackage_but_core() -> None:
    for path in [ROOT / "events" / "models.py", ROOT / "events" / "fields.py"]:
        targets = {subpackage_of(m) for m in imported_modules(path)} - {None}
        assert targets <= {"core"}, (path, targets)


def test_the_http_kernel_imports_no_app() -> None:
    wrong = {
        f"{path.relative_to(ROOT)} imports {module}"
        for path in (ROOT / "http_api").rglob("*.py")
        for module in imported_modules(path)
        if module.split(".")[0] in {"reservations", "payments", "events"}
    }
    assert not wrong, sorted(wrong)


def test_reservations_do_not_import_payments() -> None:
    """Payments depend on reservations (a payment confirms one), not the other way;
    the demo data, which spans both, is the exception."""
    wrong = {
        f"{path.relative_to(ROOT)} imports {module}"
        for path in (ROOT / "reservations").rglob("*.py")
        if "migrations" not in path.parts and path.name != "demo.py"
        for module in imported_modules(path)
        if module.split(".")[0] == "payments"
    }
    assert not wrong, sorted(wrong)


def test_no_production_file_class_or_function_is_too_long() -> None:
    too_long: list[str] = []
    for path in production_files():
        source = path.read_text()
        where = path.relative_to(ROOT)
        lines = source.count("\n") + 1
        if lines > MAX_FILE_LINES:
            too_long.append(f"{where}: {lines} lines")
        for node in ast.walk(ast.parse(source, str(path))):
            if not isinstance(
                node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
            ):
                continue
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            limit = (
                MAX_CLASS_LINES
                if isinstance(node, ast.ClassDef)
                else MAX_FUNCTION_LINES
            )
            if length > limit:
                too_long.append(f"{where}:{node.lineno} {node.name}: {length} lines")
    assert not too_long, "\n".join(too_long)


def test_the_readme_table_names_every_module_of_every_subpackage() -> None:
    """The README's table of the events package and the files agree."""
    readme = (ROOT / "README.md").read_text()
    rows = {
        line.split("|")[1].strip().strip("`").rstrip("/"): line
        for line in readme.splitlines()
        if line.startswith("| `")
        and line.split("|")[1].strip().strip("`").endswith("/")
    }
    for name in SUBPACKAGES:
        assert name in rows, f"README has no row for events/{name}/"
        modules = {
            path.stem
            for path in (ROOT / "events" / name).rglob("*.py")
            if path.stem != "__init__"
        }
        missing = {m for m in modules if f"`{m}`" not in rows[name]}
        assert not missing, f"README's events/{name}/ row omits {sorted(missing)}"
