"""The jaxtyping import hook is on under pytest (``--jaxtyping-packages`` in pyproject's addopts):
the annotated shapes of the engine and metrics modules are checked at every call."""

import importlib

import pytest
import torch


def _kl_from_logits():
    for module in ("sensdir.metrics", "sensdir.metrics.kl", "sensdir.engine.readout", "sensdir.engine"):
        try:
            fn = getattr(importlib.import_module(module), "kl_from_logits", None)
        except ImportError:
            continue
        if fn is not None:
            return fn
    pytest.fail("kl_from_logits not found in sensdir.metrics or sensdir.engine")


def test_hook_is_configured(pytestconfig):
    packages = pytestconfig.getoption("jaxtyping_packages") or ""
    assert "sensdir.engine" in packages and "sensdir.metrics" in packages


def test_matching_shapes_pass():
    kl_N = _kl_from_logits()(torch.randn(3, 5), torch.randn(3, 5))
    assert kl_N.shape == (3,)


def test_mismatched_shapes_are_refused():
    """clean_logits_NV and logits_NV share N and V: a (3, 5) against a (3, 7) is a shape error,
    raised by the checker before the function body runs."""
    from jaxtyping import TypeCheckError

    with pytest.raises(TypeCheckError):
        _kl_from_logits()(torch.randn(3, 5), torch.randn(3, 7))


def test_wrong_rank_is_refused():
    from jaxtyping import TypeCheckError

    with pytest.raises(TypeCheckError):
        _kl_from_logits()(torch.randn(3, 5, 2), torch.randn(3, 5, 2))
