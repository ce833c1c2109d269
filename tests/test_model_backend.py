"""transformer_lens 4 removes HookedTransformer: sensdir builds every model in one module
(sensdir/model_backend.py), so a TransformerBridge path is added in one place."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
ROOT = Path(__file__).resolve().parents[1]
CLASSES = {"HookedTransformer", "HookedTransformerConfig"}
# The error-correction toy model (being written alongside) still builds its own; move it here next.
PENDING: set[str] = set()


def test_hooked_transformer_is_constructed_only_in_model_backend():
    users = set()
    for path in (ROOT / "sensdir").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("transformer_lens"):
                if CLASSES & {a.name for a in node.names}:
                    users.add(str(path.relative_to(ROOT)))
    assert users - PENDING == {"sensdir/model_backend.py"}, sorted(users)


def test_the_pin_below_4_is_declared_and_explained():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.replace(" ", "").startswith("transformer-lens") and "<4" in d for d in deps)
    readme = (ROOT / "README.md").read_text()
    assert "transformer_lens 4" in readme and "TransformerBridge" in readme and "sensdir/model_backend.py" in readme


def test_model_backend_builds_a_model():
    from sensdir.model_backend import build_model, model_config

    model = build_model(model_config(n_layers=1, d_model=16, n_heads=2, d_head=8, d_mlp=32, d_vocab=50, n_ctx=8, act_fn="gelu"))
    assert model.cfg.n_layers == 1 and "blocks.0.hook_resid_pre" in model.hook_dict
