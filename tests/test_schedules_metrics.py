import pytest
import torch

from sensdir.metrics.summaries import max_slope_step, plateau_length
from sensdir.schedules import SCHEDULES
from sensdir.schedules.absolute import AbsoluteConfig
from sensdir.schedules.relative import RelativeConfig
from sensdir.walk_types import Proposal


def test_registry_lists_schedules():
    assert {"relative", "absolute"} <= set(SCHEDULES.names())


def test_relative_interpolates_from_base_to_target():
    A = torch.randn(3, 5)
    T = torch.randn(3, 5)
    w = SCHEDULES.build(RelativeConfig(n_steps=5)).walk(A, Proposal(target_BD=T))
    assert w.acts_BKD.shape == (3, 5, 5)
    torch.testing.assert_close(w.acts_BKD[:, 0], A)
    torch.testing.assert_close(w.acts_BKD[:, -1], T)
    torch.testing.assert_close(w.acts_BKD[:, 2], (A + T) / 2)
    assert w.valid_BK.all()
    torch.testing.assert_close(w.grid_BK[0], torch.linspace(0, 1, 5))


def test_relative_refuses_unit_directions_without_length():
    with pytest.raises(ValueError, match="absolute"):
        SCHEDULES.build(RelativeConfig()).walk(torch.zeros(1, 2), Proposal(unit_BD=torch.ones(1, 2)))


def test_relative_walks_a_scaled_direction_to_its_natural_length():
    A = torch.randn(2, 3)
    u = torch.nn.functional.normalize(torch.randn(2, 3), dim=-1)
    L = torch.tensor([2.0, 5.0])
    w = SCHEDULES.build(RelativeConfig(n_steps=3)).walk(A, Proposal(unit_BD=u, natural_length_B=L))
    torch.testing.assert_close(w.acts_BKD[:, -1], A + L[:, None] * u)
    torch.testing.assert_close((w.acts_BKD[:, 1] - A).norm(dim=-1), L / 2)


def test_absolute_takes_exact_steps_and_drops_those_past_the_target():
    A = torch.zeros(2, 3)
    T = torch.tensor([[2.0, 0, 0], [0, 0, 0.9]])  # 4 steps of 0.5 reach the first; 1 step + rest for 2nd
    w = SCHEDULES.build(AbsoluteConfig(n_steps=8, step_size=0.5)).walk(A, Proposal(target_BD=T))
    assert w.valid_BK[0].tolist() == [True] * 5 + [False] * 3  # 0, .5, 1, 1.5, 2
    assert w.valid_BK[1].tolist() == [True] * 2 + [False] * 6  # 0, .5
    steps = w.acts_BKD[0, 1:5] - w.acts_BKD[0, :4]
    torch.testing.assert_close(steps.norm(dim=-1), torch.full((4,), 0.5))
    torch.testing.assert_close(w.acts_BKD[0, 4], T[0])


def test_absolute_along_unit_direction_is_never_truncated():
    u = torch.tensor([[0.0, 1.0]])
    w = SCHEDULES.build(AbsoluteConfig(n_steps=4, step_size=2.0)).walk(torch.zeros(1, 2), Proposal(unit_BD=u))
    assert w.valid_BK.all()
    torch.testing.assert_close(w.acts_BKD[0, :, 1], torch.tensor([0.0, 2, 4, 6]))


def test_fewer_than_two_steps_is_refused():
    with pytest.raises(ValueError, match="at least 2"):
        SCHEDULES.build(RelativeConfig(n_steps=1))


# --- METHODS §4 max-slope rule on hand-made curves ---


def test_max_slope_is_the_step_with_the_largest_rise_into_it():
    y = torch.tensor([[0.0, 0.1, 0.2, 1.5, 1.6, 1.7]])
    assert max_slope_step(y).item() == 3


def test_max_slope_flat_curve_gives_last_step():
    y = torch.tensor([[0.0, 0.01, 0.02, 0.03, 0.035]])  # every rise <= 0.02
    assert max_slope_step(y).item() == 4


def test_max_slope_first_difference_is_prepended():
    # the largest rise is the very first one: d = [d0, d0, ...] -> argmax is index 0
    y = torch.tensor([[0.0, 1.0, 1.1, 1.2]])
    assert max_slope_step(y).item() == 0


def test_max_slope_threshold_is_strict_and_configurable():
    y = torch.tensor([[0.0, 0.02, 0.04]])
    assert max_slope_step(y, threshold=0.02).item() == 2  # no d > 0.02
    assert max_slope_step(y, threshold=0.01).item() == 0


def test_max_slope_ignores_dropped_steps():
    y = torch.tensor([[0.0, 0.5, 0.6, float("nan"), float("nan")]])
    valid = torch.tensor([[True, True, True, False, False]])
    assert max_slope_step(y, valid).item() == 0
    flat = torch.tensor([[0.0, 0.0, 0.0, float("nan")]])
    assert max_slope_step(flat, torch.tensor([[True, True, True, False]])).item() == 2


def test_plateau_length_is_first_step_at_threshold():
    l2 = torch.tensor([[0.0, 5.0, 19.9, 20.0, 30.0], [0.0, 1, 2, 3, 4]])
    assert plateau_length(l2, threshold=20.0).tolist() == [3, 5]
    valid = torch.tensor([[True] * 5, [True, True, True, False, False]])
    assert plateau_length(l2, valid, threshold=20.0).tolist() == [3, 3]
