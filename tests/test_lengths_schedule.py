"""The ``lengths`` schedule of METHODS §2 [LH24]: A' = A + L u for each L of a list, with
step 0 the unperturbed activation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sensdir.config import SensdirConfig
from sensdir.directions import DIRECTIONS
from sensdir.errors import ConfigError
from sensdir.schedules import SCHEDULES
from sensdir.schedules.lengths import DEFAULT_LENGTHS, SHORT_LENGTHS, LengthsConfig
from sensdir.walk_types import Proposal

CONF = str(Path(__file__).resolve().parent.parent / "sensdir" / "conf")
# METHODS §2, written out: odd 1..19, then 20..48 by 4, then 51..91 by 10
DEFAULT = [1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 20, 24, 28, 32, 36, 40, 44, 48, 51, 61, 71, 81, 91]
SHORT = [
    0.1,
    0.2,
    0.3,
    0.4,
    0.5,
    0.6,
    0.7,
    0.8,
    0.9,
    1.0,
    1.1,
    1.2,
    1.3,
    1.4,
    1.5,
    1.6,
    1.7,
    1.8,
    1.9,
    2.0,
    2.1,
    2.2,
    2.3,
    2.4,
    2.5,
    2.6,
    2.7,
    2.8,
    2.9,
]


def _unit(B: int = 3, d: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(B, d, generator=g)
    u = torch.nn.functional.normalize(torch.randn(B, d, generator=g), dim=-1)
    return A, u


def test_registered_with_length_grid():
    """lengths is a registered schedule whose grid is a distance ("length") and which walks
    targets, unit directions and scaled unit directions."""
    entry = SCHEDULES.get("lengths")
    assert entry.config_cls().name == "lengths"
    assert entry.impl.grid_kind == "length"
    assert set(entry.impl.accepts) == {"target", "direction", "scaled_direction"}


@pytest.mark.parametrize("preset, lengths", [("default", DEFAULT), ("short", SHORT)])
def test_presets_are_the_methods_lists(preset, lengths):
    """The default list is odd 1..19, 20..48 by 4, 51..91 by 10; the short list 0.1..2.9 by 0.1
    (each the float nearest the decimal); the schedule prepends L = 0 for step 0, and n_steps is
    1 + len(list)."""
    assert list(DEFAULT_LENGTHS if preset == "default" else SHORT_LENGTHS) == [float(x) for x in lengths]
    s = SCHEDULES.build(LengthsConfig(preset=preset))
    assert s.n_steps == 1 + len(lengths)
    A, u = _unit()
    w = s.walk(A, Proposal(unit_BD=u))
    assert w.grid_BK.shape == (3, 1 + len(lengths)) and w.acts_BKD.shape == (3, 1 + len(lengths), 6)
    assert w.grid_BK[1].tolist() == pytest.approx([0.0, *lengths], abs=1e-6)
    assert w.valid_BK.all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_walk_is_a_plus_l_u(dtype):
    """Step 0 is exactly A; step k is A + L_k u, so ||A' - A|| = L_k; the grid equals the
    lengths; all in the base's dtype."""
    A, u = (x.to(dtype) for x in _unit())
    s = SCHEDULES.build(LengthsConfig())
    w = s.walk(A, Proposal(unit_BD=u))
    assert torch.equal(w.acts_BKD[:, 0], A)
    assert w.acts_BKD.dtype == dtype and w.grid_BK.dtype == dtype
    L_K = torch.tensor([0.0, *DEFAULT], dtype=dtype)
    assert torch.equal(w.grid_BK, L_K.expand(3, -1))
    torch.testing.assert_close(w.acts_BKD, A[:, None] + L_K[None, :, None] * u[:, None])
    dist_BK = (w.acts_BKD - A[:, None]).norm(dim=-1)
    torch.testing.assert_close(dist_BK, L_K.expand(3, -1), atol=1e-4, rtol=1e-5)


def test_scaled_direction_walks_along_u_ignoring_its_natural_length():
    """A scaled direction (e.g. sae_error) is walked to the list's lengths, not to its own."""
    A, u = _unit()
    s = SCHEDULES.build(LengthsConfig(lengths=(1.0, 2.0)))
    w0 = s.walk(A, Proposal(unit_BD=u))
    w1 = s.walk(A, Proposal(unit_BD=u, natural_length_B=torch.tensor([0.3, 5.0, 7.0])))
    assert torch.equal(w0.acts_BKD, w1.acts_BKD)


def test_works_with_targets():
    """With a target T, the walk goes along u = (T - A) / ||T - A|| to every listed length,
    past T too (no step is dropped); T = A gives the constant walk."""
    A, u = _unit()
    T = A + 2.5 * u
    T[2] = A[2]
    w = SCHEDULES.build(LengthsConfig(lengths=(1.0, 2.5, 4.0))).walk(A, Proposal(target_BD=T))
    assert w.valid_BK.all()
    torch.testing.assert_close(w.acts_BKD[:2, 2], T[:2])
    torch.testing.assert_close(w.acts_BKD[:2, 3], A[:2] + 4.0 * u[:2])
    torch.testing.assert_close((w.acts_BKD[:2] - A[:2, None]).norm(dim=-1), w.grid_BK[:2])
    assert torch.equal(w.acts_BKD[2], A[2].expand(4, -1))


def test_explicit_list_overrides_the_preset():
    """lengths=[...] gives any list (it wins over preset); a list from OmegaConf is stored as
    a tuple, so the frozen config stays hashable."""
    cfg = LengthsConfig(preset="short", lengths=[0.5, 1.5, 10])
    assert cfg.lengths == (0.5, 1.5, 10.0)
    s = SCHEDULES.build(cfg)
    assert s.n_steps == 4 and s.grid(torch.float64).tolist() == [0.0, 0.5, 1.5, 10.0]


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"preset": "long"}, "default, short"),
        ({"lengths": ()}, "empty"),
        ({"lengths": (0.0, 1.0)}, "positive"),
        ({"lengths": (1.0, float("nan"))}, "positive"),
        ({"lengths": (2.0, 1.0)}, "increasing"),
        ({"n_steps": 100}, "n_steps=100"),
    ],
)
def test_bad_configs_are_refused(kw, match):
    """A bad preset, list or n_steps is a ConfigError when the config is built."""
    with pytest.raises(ConfigError, match=match):
        LengthsConfig(**kw)


def test_n_steps_is_derived_or_must_agree():
    """n_steps defaults to 0 (derived from the list); the matching count is accepted too."""
    assert SCHEDULES.build(LengthsConfig()).n_steps == 24
    assert SCHEDULES.build(LengthsConfig(n_steps=24)).n_steps == 24
    assert SCHEDULES.build(LengthsConfig(preset="short", n_steps=30)).n_steps == 30


@pytest.mark.parametrize("name", ["real", "cov_mixture", "sae_error"])
def test_job_validation_accepts_every_kind_of_proposal(name):
    """The job's checks let lengths walk targets, directions and scaled directions, and
    refuse a relative walk of plain unit directions."""
    from sensdir.schedules.relative import RelativeConfig
    from sensdir.validate import validate_walks as _validate

    direction = DIRECTIONS.get(name).config_cls()
    assert _validate(SensdirConfig(direction=direction, schedule=LengthsConfig())).n_steps == 24
    if DIRECTIONS.get(name).impl.returns == "direction":
        with pytest.raises(ConfigError, match="lengths"):
            _validate(SensdirConfig(direction=direction, schedule=RelativeConfig()))


def test_selectable_through_hydra():
    """schedule=lengths composes with preset and explicit lists; a bad preset fails in
    to_config with a ConfigError."""
    from hydra import compose, initialize_config_dir

    from sensdir.config import register_configs, to_config

    register_configs()
    with initialize_config_dir(config_dir=CONF, version_base=None):
        assert to_config(compose("config", overrides=["schedule=lengths"])).schedule == LengthsConfig()
        cfg = to_config(compose("config", overrides=["schedule=lengths", "schedule.preset=short"]))
        assert SCHEDULES.build(cfg.schedule).n_steps == 30
        cfg = to_config(compose("config", overrides=["schedule=lengths", "schedule.lengths=[1,2.5]"]))
        assert cfg.schedule.lengths == (1.0, 2.5)
        bad = compose("config", overrides=["schedule=lengths", "schedule.preset=long"])
    with pytest.raises(ConfigError, match="valid choices"):
        to_config(bad)
