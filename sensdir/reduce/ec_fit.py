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

(choice) Rows are pooled through their *sensitivities* ``L^-2``: for a quadratic response
``L(u)^-2`` is proportional to ``u^T H u``, so averages of ``L^-2`` over rows are averages of the
quadratic form, and cross terms ``d1^T H d2`` (which the axis-aligned model lacks) cancel where
their signs do. A quadratic response then gives ``p = 2`` exactly whatever the two pure lengths
of each row, and pairs whose mixtures are distributed like the pure directions (isotropic
random pairs) give ``p = 2`` whatever the response; a mean of per-row log ratios would give
more than 2 in both cases (Jensen's inequality on the cross terms).

Estimators, per group of rows (a direction source on one model site) and KL level, with
``<x>`` the mean over rows:

- closed form (METHODS §11): ``p = 1 / (1/2 - m)``, ``m = log2(L_mix / L_pure)`` with
  ``L_mix = <L(45)^-2>^(-1/2)`` and ``L_pure = <(L(0)^-2 + L(90)^-2) / 2>^(-1/2)``; exact under
  the model when each row's two pure lengths are equal, and at ``p = 2`` always;
- fit over all angles: ``p`` minimising, over the angles strictly between 0 and 90 degrees,
  the squared difference of ``log <L(theta)^-2>`` measured and under the model (each row with
  its own ``s1``, ``s2``, so the model passes through the pure lengths); exact under the model;
- 95% CIs: percentile bootstrap over (base, pair) rows, the same resamples for both.

Rows enter when their walks at every angle reach the level (the rest are counted as
censored). ``p`` is searched on ``[P_MIN, P_MAX]`` and the closed form clipped there:
``P_MAX`` stands for "as large as the schedule can tell" (mixtures needing ``sqrt 2`` times the
pure length or more).
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
        """The rows whose walks reach the level at every angle."""
        self.index_of(0.0), self.index_of(45.0), self.index_of(90.0)  # the grid must have them
        ok = np.all(np.isfinite(self.length_RA) & (self.length_RA > 0), axis=1)
        return AngleRows(self.theta_A, self.length_RA[ok])

    def index_of(self, deg: float) -> int:
        hit = np.flatnonzero(np.isclose(np.degrees(self.theta_A), deg))
        if not len(hit):
            raise ValueError(f"the angle grid {np.degrees(self.theta_A).tolist()} lacks {deg} degrees")
        return int(hit[0])

    def interior(self) -> np.ndarray:
        deg = np.degrees(self.theta_A)
        return (deg > 1e-9) & (deg < 90 - 1e-9)

    def sensitivity(self) -> np.ndarray:
        """``[R, A]``: ``L^-2`` per row and angle."""
        return self.length_RA**-2.0

    def pure_sensitivity(self) -> np.ndarray:
        """``[R]``: ``(L(0)^-2 + L(90)^-2) / 2``."""
        s = self.sensitivity()
        return 0.5 * (s[:, self.index_of(0.0)] + s[:, self.index_of(90.0)])

    def model_sensitivity(self, p: float) -> np.ndarray:
        """``[R, A]``: ``L^-2`` of the L^p model through each row's pure lengths."""
        L = self.length_RA
        return np.exp(-2 * model_log_length(self.theta_A, np.log(L[:, self.index_of(0.0)]), np.log(L[:, self.index_of(90.0)]), p))

    def relative_length(self, p: float | None = None, w_R: np.ndarray | None = None) -> np.ndarray:
        """``[A]``: ``(<L(theta)^-2> / <L_pure^-2>)^(-1/2)``, measured (``p=None``) or the model's."""
        w = np.ones(len(self.length_RA)) if w_R is None else w_R
        s = self.sensitivity() if p is None else self.model_sensitivity(p)
        return np.sqrt((w @ self.pure_sensitivity()) / (w @ s))


def _loss_table(rows: AngleRows) -> tuple[np.ndarray, np.ndarray]:
    """Measured sensitivities ``[R, A']`` and the model's ``[R, A', G]`` at the interior angles
    and every grid value of log p."""
    inner = rows.interior()
    obs = rows.sensitivity()[:, inner]
    model = np.stack([rows.model_sensitivity(float(np.exp(lp)))[:, inner] for lp in _LOG_P_GRID], axis=2)
    return obs, model


def _losses(w_NR: np.ndarray, obs_RA: np.ndarray, model_RAG: np.ndarray) -> np.ndarray:
    """``[N, G]``: the fit's loss for N weightings of the rows, at every grid value of log p."""
    R, A, G = model_RAG.shape
    o = np.log(w_NR @ obs_RA)  # [N, A]
    m = np.log(w_NR @ model_RAG.reshape(R, A * G)).reshape(len(w_NR), A, G)
    return ((o[:, :, None] - m) ** 2).sum(1)


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
    inner = rows.interior()
    if not len(rows.length_RA) or not inner.any():
        return float("nan")
    obs = np.log(rows.sensitivity()[:, inner].mean(0))

    def loss(lp: float) -> float:
        return float(((obs - np.log(rows.model_sensitivity(float(np.exp(lp)))[:, inner].mean(0))) ** 2).sum())

    table = np.array([loss(lp) for lp in _LOG_P_GRID])
    i = int(np.argmin(table))
    lo, hi = _LOG_P_GRID[max(i - 1, 0)], _LOG_P_GRID[min(i + 1, len(_LOG_P_GRID) - 1)]
    res = minimize_scalar(loss, bounds=(lo, hi), method="bounded")
    return float(np.exp(res.x)) if res.fun <= table[i] else float(np.exp(_LOG_P_GRID[i]))


def closed_form_m(rows: AngleRows, w_NR: np.ndarray) -> np.ndarray:
    """``[N]``: ``m = log2(L_mix / L_pure)`` of METHODS §11 for N weightings of the rows."""
    return -0.5 * np.log2((w_NR @ rows.sensitivity()[:, rows.index_of(45.0)]) / (w_NR @ rows.pure_sensitivity()))


@dataclass
class PEstimate:
    """Both estimators of ``p`` with their bootstrap CIs, for one group at one level."""

    p_closed: float
    p_closed_ci: tuple[float, float]
    p_fit: float
    p_fit_ci: tuple[float, float]
    log2_ratio45: float  # m = log2(L_mix / L_pure) of the closed form
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
    has_fit = bool(ok.interior().any())
    obs, model = _loss_table(ok) if has_fit else (None, None)
    closed_b: list[float] = []
    fit_b: list[float] = []
    for start in range(0, n_boot, 256):
        counts = rng.multinomial(R, np.full(R, 1 / R), size=min(256, n_boot - start)).astype(np.float64)
        closed_b.extend(p_from_log2_ratio(float(m)) for m in closed_form_m(ok, counts))
        if obs is not None and model is not None:
            fit_b.extend(_refine(row) for row in _losses(counts, obs, model))
    a = (1 - level) / 2

    def ci(xs: list[float]) -> tuple[float, float]:
        return (float(np.quantile(xs, a)), float(np.quantile(xs, 1 - a))) if xs else nan2

    m = float(closed_form_m(ok, np.ones((1, R)))[0])
    return PEstimate(p_from_log2_ratio(m), ci(closed_b), fit_p(ok) if has_fit else float("nan"), ci(fit_b), m, R, n_total)
