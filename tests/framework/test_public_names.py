"""Modules use each other through public names: no `from <project module> import _private`."""

import ast

from tests.helpers import ROOT

PACKAGES = ("hylab", "lightning_modules", "datamodules", "callbacks", "bench", "hydra_plugins", "tests")


def private_imports(path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGES):
            found += [f"{path.relative_to(ROOT)}: from {node.module} import {alias.name}" for alias in node.names
                      if alias.name.startswith("_") and not alias.name.startswith("__")]
    return found


def test_no_module_imports_a_private_name_of_another():
    files = [ROOT / "run.py", *(p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py")))]
    found = [hit for path in files for hit in private_imports(path)]
    assert not found, found
