"""The package layout's one rule: only ``pg_dataops/airflow/`` and each capability's ``operators.py`` import Airflow.

Everything else (the shared kernel in ``common/``, the capabilities' cores) stays Airflow-free, so the unit
tests reach the decisions without a task context. The walk covers imports inside functions too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "plugins" / "pg_dataops"
MODULES = sorted(PKG.rglob("*.py"))


def airflow_imports(path: Path) -> list[str]:
    """`airflow` or `airflow.*` modules a file imports, anywhere in it (relative imports are not Airflow's)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [f"{name} (line {node.lineno})" for name in names if name == "airflow" or name.startswith("airflow.")]
    return found


def may_import_airflow(path: Path) -> bool:
    rel = path.relative_to(PKG)
    return rel.parts[0] == "airflow" or rel.name == "operators.py"


def test_the_walk_sees_airflow_imports():
    # Guards the rule's own test: the base operator imports Airflow, at the top and inside functions.
    assert airflow_imports(PKG / "airflow" / "base.py")


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(PKG)) for p in MODULES])
def test_only_the_airflow_package_and_operators_import_airflow(path):
    if may_import_airflow(path):
        return
    assert airflow_imports(path) == [], f"{path.relative_to(PKG)} imports Airflow; move that code to an operators.py or pg_dataops/airflow/"


def test_every_package_has_an_init_with_a_docstring():
    for folder in [PKG, *(d for d in PKG.rglob("*") if d.is_dir() and d.name != "__pycache__")]:
        init = folder / "__init__.py"
        assert init.is_file(), f"{folder.relative_to(PKG.parent)} has no __init__.py"
        assert ast.get_docstring(ast.parse(init.read_text())), f"{init.relative_to(PKG.parent)} has no docstring"


def test_the_airflow_subpackage_does_not_shadow_airflow():
    # pg_dataops.airflow is only ever imported by its full name: `import airflow` stays the real Airflow.
    import airflow
    import pg_dataops.airflow.base  # noqa: F401

    assert Path(airflow.__file__).parent != PKG / "airflow"


def test_the_plugin_loader_skips_the_package():
    # Airflow's plugin loader imports every .py under plugins/ as a top-level module named after the
    # file; five `operators.py` (and `config`, `s3`, ...) would collide in sys.modules. plugins/.airflowignore
    # keeps it to plugin files; the package is imported as pg_dataops.
    from airflow._shared.module_loading import find_path_from_directory

    plugins = PKG.parent
    seen = [Path(p).relative_to(plugins) for p in find_path_from_directory(str(plugins), ".airflowignore", "glob")]
    assert [p for p in seen if p.parts[0] == "pg_dataops"] == []
    assert (plugins / ".airflowignore").is_file()


PLUGIN_FILES = sorted(PKG.parent.glob("*.py"))


def test_there_is_a_ui_plugin_file():
    assert [p.name for p in PLUGIN_FILES] == ["pg_dataops_ui.py"]


@pytest.mark.parametrize("path", PLUGIN_FILES, ids=[p.name for p in PLUGIN_FILES])
def test_plugin_files_import_only_the_sdk_at_load(path):
    # Every Airflow component loads plugins/*.py: the web app and what it reads are imported on first use.
    tree = ast.parse(path.read_text())
    names = [a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names] + \
            [n.module for n in tree.body if isinstance(n, ast.ImportFrom)]
    assert all(n == "__future__" or n == "airflow.sdk" or n.startswith("airflow.sdk.") for n in names), names
