"""The layout rules of the codebase (issue 11), checked on the source: small modules and
functions, the embedded model reached only through the loader, no reaching into another
module's private names, and a reduce that never imports the engine."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "sensdir"
SOURCES = sorted(ROOT.rglob("*.py"))
# Build-time scripts that train the shipped model and SAEs: long straight-line procedures.
TRAINING_SCRIPTS = {"embedded/train.py", "embedded/train_saes.py", "embedded/sae_cards.py"}
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 60


def _rel(p: Path) -> str:
    return p.relative_to(ROOT).as_posix()


def _imports(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, []


@pytest.mark.parametrize("path", SOURCES, ids=_rel)
def test_modules_and_functions_are_small(path):
    src = path.read_text()
    assert len(src.splitlines()) <= MAX_MODULE_LINES, f"{_rel(path)} has {len(src.splitlines())} lines"
    if _rel(path) in TRAINING_SCRIPTS:
        return
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            assert n <= MAX_FUNCTION_LINES, f"{_rel(path)}:{node.lineno} {node.name} has {n} lines"


@pytest.mark.parametrize("path", SOURCES, ids=_rel)
def test_embedded_package_is_reached_only_through_the_loader(path):
    if _rel(path).startswith("embedded/") or _rel(path) == "loading.py":
        return
    for module, names in _imports(ast.parse(path.read_text())):
        assert not module.startswith("sensdir.embedded"), f"{_rel(path)} imports {module}"
        assert not (module == "sensdir" and "embedded" in names), f"{_rel(path)} imports sensdir.embedded"


@pytest.mark.parametrize("path", SOURCES, ids=_rel)
def test_no_private_names_imported_from_other_modules(path):
    for module, names in _imports(ast.parse(path.read_text())):
        if module.startswith("sensdir"):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            assert not private, f"{_rel(path)} imports private {private} from {module}"


def test_reduce_imports_neither_torch_models_nor_the_engine():
    code = "import sys, sensdir.reduce, sensdir.status; print(sorted(m for m in sys.modules if m.startswith(('sensdir.engine', 'sensdir.job', 'transformer_lens'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
