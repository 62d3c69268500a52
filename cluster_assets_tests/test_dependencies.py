"""What the code imports is what pyproject.toml declares, and only Dagster's public modules are used."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "cluster_assets"
PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def imports() -> list[tuple[str, str]]:
    """(module, file importing it) for every import of the package, module-level and function-level."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            found += [(name, str(path.relative_to(PACKAGE.parent))) for name in names]
    return found


def imported_modules() -> dict[str, str]:
    """Top-level module -> the first file importing it."""
    found: dict[str, str] = {}
    for name, where in imports():
        found.setdefault(name, where)
    return found


# Imported only by an optional part, declared in that part's extra (not installed by a plain install).
OPTIONAL = {"cluster_assets/engines/ray_engine.py": "ray"}


def _names(deps: list[str]) -> set[str]:
    return {re.split(r"[\s\[<>=!~;]", d, maxsplit=1)[0].lower().replace("_", "-") for d in deps}


def declared(extra: str | None = None) -> set[str]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    return _names(project["optional-dependencies"][extra] if extra else project["dependencies"])


def test_every_third_party_import_is_a_declared_dependency():
    dists = packages_distributions()
    wanted = declared()
    missing = []
    for module, where in imported_modules().items():
        top = module.split(".")[0]
        if top in sys.stdlib_module_names or top == "cluster_assets":
            continue
        names = {d.lower().replace("_", "-") for d in dists.get(top, [top])}
        if where in OPTIONAL:  # an optional engine: its package must be in its own extra
            if not names & declared(OPTIONAL[where]):
                missing.append(f"{where}: imports {top} ({', '.join(sorted(names))}), not in the "
                               f"[{OPTIONAL[where]}] extra")
            continue
        if not names & wanted:
            missing.append(f"{where}: imports {top} ({', '.join(sorted(names))}) not in pyproject.toml")
    assert not missing, "\n".join(missing)


# The one module allowed Dagster's internals: the instance storage subclasses Dagster's SQLite and PostgreSQL
# storages to mend their pool-slot claim (storages are not exported by dagster); test_instance_storage.py
# shows Dagster's own claim still racing, so a Dagster release that changes them fails there first.
PRIVATE_DAGSTER_ALLOWED = {"cluster_assets/instance_storage.py"}


def test_no_private_dagster_modules_are_imported():
    private = [f"{where}: {module}" for module, where in imports()
               if module.startswith("dagster") and any(p.startswith("_") for p in module.split(".")[1:])
               and where not in PRIVATE_DAGSTER_ALLOWED]
    assert not private, private


def test_the_production_storage_and_compute_logs_are_declared():
    assert {"dagster-postgres", "psycopg2-binary", "dagster-aws"} <= declared()
