"""The L^p response model of feature-specific error correction, METHODS §11 [FH26].

Model: the effect of ``delta = L (c1 d1 + c2 d2)`` (``d1``, ``d2`` orthonormal) depends on the
perturbation only through ``L ||(c1 / s1, c2 / s2)||_p``, so the length at which KL first reaches
a level, along ``u(theta) = cos(theta) d1 + sin(theta) d2``, is

    L(theta)^(-p) = (|cos theta| / s1)^p + (|sin theta| / s2)^p,   s1 = L(0), s2 = L(90).

METHODS §11 states it with one scale (``s1 = s2 = L_pure``); the two pure directions of a real
pair are not equally sensitive, so (choice) each (base, pair) row keeps its own ``s1``, ``s2``,
read off its pure walks. ``p = 2`` is a quadratic form (the mixture at 45 degrees needs the same
length as the pure directions); ``p > 2`` makes mixtures need longer walks, up to ``sqrt 2`` times
longer as ``p -> inf``.

Estimators, per group of rows (a direction source on one model site) and KL level:

- closed form (METHODS §11): ``p = 1 / (1/2 - m)`` with ``m`` the mean over rows of
  ``log2(L(45) / L_pure)``; (choice) ``L_pure = ((L(0)^-2 + L(90)^-2) / 2)^(-1/2)``, the pure
  length that makes the formula exact at ``p = 2`` whatever the two pure lengths are (a
  quadratic response is never mistaken for ``p != 2``), and exact for every ``p`` when they are
  equal (the geometric mean would bias a quadratic response below 2);
- fit over all angles: ``p`` minimising the squared error of ``log L(theta)`` at every angle
  strictly between 0 and 90 degrees, over all rows at once, with each row's ``s1``, ``s2`` set to
  its pure lengths (the model passes through them exactly);
- 95% CIs: percentile bootstrap over rows (the same resamples for both estimators).

Rows enter when both pure walks and the 45-degree walk reach the level; a censored angle of a
row in the fit (it never reached the level) is left out of that row's residuals. ``p`` is
searched on ``[P_MIN, P_MAX]`` and the closed form clipped there: ``P_MAX`` stands for "as large
as the schedule can tell" (the 45-degree length at ``sqrt 2`` times the pure one).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar

P_MIN, P_MAX = 0.5, 100.0
_LOG_P_GRID = np.linspace(np.log(P_MIN), np.log(P_MAX), 481)


def lengths_to_levels(grid_NK: np.ndarray, y_NK: np.ndarray, levels: tuple[float, ...]) -> np.ndarray:
    """``[N, levels]``: the length at which each row's curve first reaches each level, NaN where it
    never does (censored). Interpolated between the grid points around the crossing: (choice)
    linearly in log KL against log length (exact for a power law ``KL = c L^k``); on the first
    segment, from the clean step ``L = 0``, as ``KL ∝ L^2`` (KL is quadratic about the clean
    activation); linearly where the lower point has KL 0 (a flat stretch)."""
    g = np.asarray(grid_NK, np.float64)
    y = np.asarray(y_NK, np.float64)
    out = np.full((len(y), len(levels)), np.nan)
    r = np.arange(len(y))
    for j, lv in enumerate(levels):
        reached = np.nan_to_num(y, nan=-np.inf) >= lv
        hit = reached.any(1) & (reached.argmax(1) > 0)
        k = np.where(hit, reached.argmax(1), 1)
        g0, g1, y0, y1 = g[r, k - 1], g[r, k], y[r, k - 1], y[r, k]
        with np.errstate(divide="ignore", invalid="ignore"):
            from_zero = g1 * np.sqrt(lv / y1)
            t = (np.log(lv) - np.log(y0)) / (np.log(y1) - np.log(y0))
            loglog = np.exp(np.log(g0) + t * (np.log(g1) - np.log(g0)))
            linear = g0 + (lv - np.nan_to_num(y0)) / (y1 - np.nan_to_num(y0)) * (g1 - g0)
        val = np.where(g0 <= 0, from_zero, np.where((y0 > 0) & np.isfinite(y0), loglog, linear))
        out[:, j] = np.where(hit, val, np.nan)
    return out


def p_from_log2_ratio(m: float) -> float:
    """METHODS §11's closed form ``p = 1 / (1/2 - m)``, ``m = log2(L_mix / L_pure)``, clipped to
    ``[P_MIN, P_MAX]`` (``m >= 1/2``: no finite p; then ``P_MAX``)."""
    if not np.isfinite(m):
        return float("nan")
    q = 0.5 - m
    return P_MAX if q <= 1 / P_MAX else float(np.clip(1 / q, P_MIN, P_MAX))


def model_log_length(theta_A: np.ndarray, log_s1: np.ndarray, log_s2: np.ndarray, p: float) -> np.ndarray:
    """``log L(theta)`` of the L^p model, ``[rows, angles]`` (``theta`` in radians)."""
    with np.errstate(divide="ignore"):
        lc, ls = np.log(np.abs(np.cos(theta_A))), np.log(np.abs(np.sin(theta_A)))
    a = p * (lc[None, :] - np.asarray(log_s1)[:, None])
    b = p * (ls[None, :] - np.asarray(log_s2)[:, None])
    return -np.logaddexp(a, b) / p


@dataclass
class AngleRows:
    """One group's rows at one level: the angles (radians, both pure ones included) and each
    (base, pair) row's length at each angle (NaN: censored)."""

    theta_A: np.ndarray
    length_RA: np.ndarray

    def usable(self) -> AngleRows:
        """The rows whose pure and 45-degree walks all reach the level."""
        need = [self._at(0.0), self._at(90.0), self._at(45.0)]
        ok = np.all(np.isfinite(self.length_RA[:, need]) & (self.length_RA[:, need] > 0), axis=1)
        return AngleRows(self.theta_A, self.length_RA[ok])

    def _at(self, deg: float) -> int:
        hit = np.flatnonzero(np.isclose(np.degrees(self.theta_A), deg))
        if not len(hit):
            raise ValueError(f"the angle grid {np.degrees(self.theta_A).tolist()} lacks {deg} degrees")
        return int(hit[0])

    def log_ratio45(self) -> np.ndarray:
        """Per row, ``log2(L(45) / L_pure)`` (see the module docstring for ``L_pure``)."""
        return (np.log(self.length_RA[:, self._at(45.0)]) - self.log_pure()) / np.log(2)

    def pure_logs(self) -> tuple[np.ndarray, np.ndarray]:
        return np.log(self.length_RA[:, self._at(0.0)]), np.log(self.length_RA[:, self._at(90.0)])

    def log_pure(self) -> np.ndarray:
        """Per row, ``log L_pure = -1/2 log((L(0)^-2 + L(90)^-2) / 2)``."""
        s1, s2 = self.pure_logs()
        return -0.5 * (np.logaddexp(-2 * s1, -2 * s2) - np.log(2))

    def interior(self) -> np.ndarray:
        deg = np.degrees(self.theta_A)
        return (deg > 1e-9) & (deg < 90 - 1e-9)

    def row_loss(self, p: float) -> np.ndarray:
        """Per row, the squared log-length error of the model at the interior angles."""
        s1, s2 = self.pure_logs()
        inner = self.interior()
        with np.errstate(divide="ignore", invalid="ignore"):
            obs = np.log(self.length_RA[:, inner])
        res = obs - model_log_length(self.theta_A[inner], s1, s2, p)
        return np.nansum(res**2, axis=1)

    def relative_log_length(self, p: float | None = None) -> np.ndarray:
        """``log(L(theta) / L_pure)`` per row and angle: observed (``p=None``) or the model's."""
        s1, s2 = self.pure_logs()
        ref = self.log_pure()[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            logs = np.log(self.length_RA) if p is None else model_log_length(self.theta_A, s1, s2, p)
        return logs - ref


def _refine(losses_G: np.ndarray) -> float:
    """The minimum of a loss tabulated on the log-p grid, refined by a parabola through the
    best grid point and its neighbours."""
    i = int(np.argmin(losses_G))
    if 0 < i < len(losses_G) - 1:
        y0, y1, y2 = losses_G[i - 1 : i + 2]
        den = y0 - 2 * y1 + y2
        step = _LOG_P_GRID[1] - _LOG_P_GRID[0]
        off = 0.5 * (y0 - y2) / den if den > 0 else 0.0
        return float(np.exp(_LOG_P_GRID[i] + np.clip(off, -1, 1) * step))
    return float(np.exp(_LOG_P_GRID[i]))


def fit_p(rows: AngleRows) -> float:
    """The all-angle fit of ``p`` (``rows`` already ``usable``): a grid search on log p, then
    Brent's method between the best grid point's neighbours."""
    if not len(rows.length_RA) or not rows.interior().any():
        return float("nan")
    table = np.array([rows.row_loss(float(np.exp(lp))).sum() for lp in _LOG_P_GRID])
    i = int(np.argmin(table))
    lo, hi = _LOG_P_GRID[max(i - 1, 0)], _LOG_P_GRID[min(i + 1, len(_LOG_P_GRID) - 1)]
    res = minimize_scalar(lambda lp: rows.row_loss(float(np.exp(lp))).sum(), bounds=(lo, hi), method="bounded")
    return float(np.exp(res.x)) if res.fun <= table[i] else float(np.exp(_LOG_P_GRID[i]))


@dataclass
class PEstimate:
    """Both estimators of ``p`` with their bootstrap CIs, for one group at one level."""

    p_closed: float
    p_closed_ci: tuple[float, float]
    p_fit: float
    p_fit_ci: tuple[float, float]
    log2_ratio45: float  # mean over rows of log2(L(45) / L_pure)
    n_rows: int  # rows in the estimate
    n_total: int  # rows of the group (the rest are censored at this level)


def estimate_p(rows: AngleRows, n_boot: int, rng: np.random.Generator, level: float = 0.95) -> PEstimate:
    """Both estimators and their percentile-bootstrap CIs, resampling (base, pair) rows."""
    n_total = len(rows.length_RA)
    ok = rows.usable()
    R = len(ok.length_RA)
    nan2 = (float("nan"), float("nan"))
    if R == 0:
        return PEstimate(float("nan"), nan2, float("nan"), nan2, float("nan"), 0, n_total)
    m_R = ok.log_ratio45()
    has_fit = bool(ok.interior().any())
    loss_RG = np.stack([ok.row_loss(float(np.exp(lp))) for lp in _LOG_P_GRID], axis=1) if has_fit else None
    closed_b: list[float] = []
    fit_b: list[float] = []
    for start in range(0, n_boot, 256):
        counts = rng.multinomial(R, np.full(R, 1 / R), size=min(256, n_boot - start)).astype(np.float64)
        closed_b.extend(p_from_log2_ratio(m) for m in counts @ m_R / R)
        if loss_RG is not None:
            fit_b.extend(_refine(row) for row in counts @ loss_RG)
    a = (1 - level) / 2

    def ci(xs: list[float]) -> tuple[float, float]:
        return (float(np.quantile(xs, a)), float(np.quantile(xs, 1 - a))) if xs else nan2

    m = float(m_R.mean())
    return PEstimate(p_from_log2_ratio(m), ci(closed_b), fit_p(ok) if has_fit else float("nan"), ci(fit_b), m, R, n_total)
