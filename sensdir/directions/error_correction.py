"""``error_correction``: pure candidate directions and their mixtures, METHODS §11 [FH26].

From each base activation ``A`` the type walks along two unit directions ``d1``, ``d2`` of a
candidate pair and along their mixtures

    u(theta) = cos(theta) d1 + sin(theta) d2',   d2' = (d2 - (d2 . d1) d1) / ||d2 - (d2 . d1) d1||,

for every ``theta`` of ``angles`` (degrees, 0 and 90 the pure directions, 45 included): ``d2``
is orthogonalised against ``d1`` (every row says so: ``d2_orthogonalised``; the cosine before,
``d1_d2_cos``). Where the pair comes from is ``source`` (:mod:`sensdir.pair_sources`: ``sae``,
``sae_rare``, ``probe``, ``contrastive``, and the controls ``random`` and ``pca``). Walk it with
``schedule=lengths``; the reduce reads, per row, the length at which KL first reaches each of
``levels`` and fits the exponent ``p`` of the L^p model (:mod:`sensdir.reduce.error_correction`).

Rows: one per (base, pair, angle). A job has ``run.n_targets = n_pairs * len(angles)`` rows per
base (checked at startup): target index ``t`` is pair ``t // len(angles)`` at angle
``angles[t % len(angles)]``. Every angle of a (base, pair) uses the same pair, whichever block
of the job its rows fall in: the pair is drawn from a generator of its own, seeded from the
job's generator's seed, the base index and the pair index.

``rotate_deg`` (for the toy model's test, METHODS §11): each of ``d1``, ``d2`` is first turned
by that angle toward a random unit vector orthogonal to both (drawn per row), so ``0`` is the
candidate itself and ``90`` a random direction orthogonal to it.

A row without a pair (e.g. fewer than two active latents) has ``pair_ok = False`` and ``u = 0``
(its walk stays at ``A``); the reduce leaves it out.

info: ``pair_source``, ``pair_index``, ``angle_deg``, ``pair_ok``, ``d1_id``, ``d2_id`` (latent,
letter or candidate index; -1 for random), ``d1_d2_cos``, ``d2_orthogonalised``, ``rotate_deg``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from sensdir.config import DirectionConfig, bounded
from sensdir.directions.base import DIRECTIONS, Direction, check_choice
from sensdir.errors import ConfigError
from sensdir.pair_sources import (
    SOURCES,
    FixedCandidates,
    Pair,
    PairSource,
    RandomPairs,
    SaeActivePairs,
    SaeRarePairs,
    contrastive_candidates,
    pca_candidates,
    probe_candidates,
)
from sensdir.sae_ops import like_base
from sensdir.walk_types import DirectionContext, Proposal


def _floats(x) -> tuple[float, ...]:
    return tuple(float(v) for v in x)


@dataclass(frozen=True)
class ErrorCorrectionConfig(DirectionConfig):
    name: str = "error_correction"
    source: str = "sae"  # sae | sae_rare | probe | contrastive | random | pca
    angles: tuple[float, ...] = (0.0, 15.0, 30.0, 45.0, 60.0, 75.0, 90.0)  # degrees
    n_pairs: int = bounded(1, ge=1)  # pairs per base: run.n_targets = n_pairs * len(angles)
    levels: tuple[float, ...] = (0.1, 0.3, 1.0)  # KL levels the reduce measures lengths to
    rotate_deg: float = bounded(0.0, ge=0.0, le=90.0)
    n_pcs: int = bounded(8, ge=2)  # pca: pairs among the top components
    max_cooccur: float = bounded(0.0, ge=0.0, le=1.0)  # sae_rare: joint firing rate in the pool
    min_pool_rate: float = bounded(0.01, ge=0.0, le=1.0)  # sae_rare: the partner's own rate there
    min_f1: float = bounded(0.6, ge=0.0, le=1.0)  # probe: letters whose probe F1 is at least this
    probe_icl_examples: int = bounded(4, ge=0)  # probe: in-context examples of the first-letter prompts
    contrast_attribute: str = "io"  # contrastive: io | s
    contrast_names: int = bounded(12, ge=2)  # contrastive: candidate names (directions)
    contrast_prompts: int = bounded(48, ge=1)  # contrastive: prompt pairs per name
    prompts: str = "auto"  # contrastive: IOI sentences, embedded | gpt2 | auto
    prompt_seed: int = 0

    def label(self) -> str:
        rot = f"@rot{self.rotate_deg:g}" if self.rotate_deg else ""
        return f"error_correction:{self.source}{rot}"

    def __post_init__(self) -> None:
        for f in ("angles", "levels"):
            object.__setattr__(self, f, _floats(getattr(self, f)))  # OmegaConf gives lists
        check_choice("error_correction", "source", self.source, SOURCES)
        a = self.angles
        if any(not 0 <= x <= 90 for x in a) or any(y <= x for x, y in zip(a, a[1:])) or not {0.0, 45.0, 90.0} <= set(a):
            raise ConfigError(f"error_correction: angles must increase within 0..90 and include 0, 45 and 90, got {list(a)}")
        lv = self.levels
        if not lv or any(x <= 0 for x in lv) or any(y <= x for x, y in zip(lv, lv[1:])):
            raise ConfigError(f"error_correction: levels must be positive and increasing, got {list(lv)}")

    def n_rows(self) -> int:
        return self.n_pairs * len(self.angles)


def row_generator(seed: int, base_index: int, pair_index: int) -> torch.Generator:
    """The generator of one (base, pair): the same for every angle of it, in any block."""
    h = hashlib.sha256(f"error_correction:{seed}:{base_index}:{pair_index}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(h[:8], "big") >> 1)


def rotate_pair(pair: Pair, deg: float, gen: torch.Generator) -> Pair:
    """``d -> cos(deg) d + sin(deg) r`` for each of the two, ``r1``, ``r2`` orthonormal random
    unit vectors orthogonal to ``d1`` and ``d2``."""
    if deg == 0:
        return pair
    g_D2 = torch.randn(pair.d1_D.shape[0], 2, generator=gen, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.cat([pair.d1_D[:, None], pair.d2_D[:, None], g_D2], dim=1))
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return Pair(c * pair.d1_D + s * q[:, 2], c * pair.d2_D + s * q[:, 3], pair.id1, pair.id2)


def mixture_basis(pair: Pair) -> tuple[Tensor, Tensor, float] | None:
    """``(d1, d2', cos(d1, d2))`` with ``d2'`` the unit part of ``d2`` orthogonal to ``d1``;
    None when the two are (nearly) parallel."""
    d1 = pair.d1_D / pair.d1_D.norm()
    d2 = pair.d2_D / pair.d2_D.norm()
    cos = float(d1 @ d2)
    rest = d2 - cos * d1
    if float(rest.norm()) < 1e-6:
        return None
    return d1, rest / rest.norm(), cos


def runs_target_index(base_index_B: Tensor) -> Tensor:
    """Position of each row within its run of equal consecutive base indices (the target index
    when a batch holds whole runs)."""
    out = torch.zeros(len(base_index_B), dtype=torch.long)
    for i in range(1, len(base_index_B)):
        out[i] = out[i - 1] + 1 if base_index_B[i] == base_index_B[i - 1] else 0
    return out


@DIRECTIONS.register("error_correction", ErrorCorrectionConfig)
class ErrorCorrection(Direction):
    returns = "direction"
    info_columns = {
        "pair_index": "int64",
        "angle_deg": "float64",
        "pair_ok": "bool",
        "d1_id": "int64",
        "d2_id": "int64",
        "d1_d2_cos": "float64",
        "pair_source": "string",
        "d2_orthogonalised": "bool",
        "rotate_deg": "float64",
    }
    cfg: ErrorCorrectionConfig

    def __init__(self, cfg: ErrorCorrectionConfig, ctx: DirectionContext):
        super().__init__(cfg, ctx)
        self.source = self._source(cfg, ctx)

    @classmethod
    def check_job(cls, cfg) -> None:
        want = cfg.direction.n_rows()
        if cfg.run.n_targets != want:
            raise ConfigError(
                f"error_correction: run.n_targets={cfg.run.n_targets} must be n_pairs * len(angles) = "
                f"{cfg.direction.n_pairs} * {len(cfg.direction.angles)} = {want} (one row per pair and angle)"
            )

    @staticmethod
    def _source(cfg: ErrorCorrectionConfig, ctx: DirectionContext) -> PairSource:
        d = int(ctx.stats.mu_D.shape[0])
        if cfg.source == "random":
            return RandomPairs(d)
        if cfg.source == "pca":
            return FixedCandidates(pca_candidates(ctx.stats.cov_DD, cfg.n_pcs))
        if cfg.source == "sae":
            return SaeActivePairs(ctx.sae)
        if cfg.source == "sae_rare":
            return SaeRarePairs(ctx.sae, ctx.pool_PD, ctx.stats.firing_freq_S, cfg.max_cooccur, cfg.min_pool_rate)
        model, site = getattr(ctx, "model", None), getattr(ctx, "site", None)
        if model is None or site is None:
            raise ConfigError(f"error_correction: source={cfg.source!r} needs the model and site in the direction context")
        if cfg.source == "probe":
            cands, letters = probe_candidates(
                model, site if isinstance(site, str) else site.hook, cfg.min_f1, cfg.probe_icl_examples
            )
            return FixedCandidates(cands, letters)
        return FixedCandidates(
            contrastive_candidates(
                model, site, cfg.contrast_attribute, cfg.contrast_names, cfg.contrast_prompts, cfg.prompts, cfg.prompt_seed
            )
        )

    def propose(self, base_BD: Float[Tensor, "B d"], base_index_B: Int[Tensor, " B"], gen: torch.Generator) -> Proposal:
        """Without target indices, rows are taken as whole runs of each base's rows."""
        return self.propose_rows(base_BD, base_index_B, runs_target_index(base_index_B.cpu()), gen)

    def propose_rows(
        self,
        base_BD: Float[Tensor, "B d"],
        base_index_B: Int[Tensor, " B"],
        target_index_B: Int[Tensor, " B"],
        gen: torch.Generator,
    ) -> Proposal:
        cfg, n_ang = self.cfg, len(self.cfg.angles)
        state = self.source.state(base_BD)
        seed = gen.initial_seed()
        u_BD = torch.zeros(base_BD.shape, dtype=torch.float64)
        info: dict[str, list] = {k: [] for k in ("pair_index", "angle_deg", "pair_ok", "d1_id", "d2_id", "d1_d2_cos")}
        pairs: dict[tuple[int, int], tuple[Pair, tuple[Tensor, Tensor, float] | None]] = {}
        for b, (bi, t) in enumerate(zip(base_index_B.tolist(), target_index_B.tolist())):
            k, theta = int(t) // n_ang, cfg.angles[int(t) % n_ang]
            if (bi, k) not in pairs:
                g = row_generator(seed, bi, k)
                pair = self.source.draw(state, b, g)
                pair = rotate_pair(pair, cfg.rotate_deg, g) if pair is not None else None
                pairs[(bi, k)] = (pair, mixture_basis(pair) if pair is not None else None)  # type: ignore[assignment]
            pair, basis = pairs[(bi, k)]
            if basis is not None:
                d1, d2o, cos = basis
                u_BD[b] = math.cos(math.radians(theta)) * d1 + math.sin(math.radians(theta)) * d2o
            ok = basis is not None
            info["pair_index"].append(k)
            info["angle_deg"].append(theta)
            info["pair_ok"].append(ok)
            info["d1_id"].append(pair.id1 if pair is not None else -1)
            info["d2_id"].append(pair.id2 if pair is not None else -1)
            info["d1_d2_cos"].append(basis[2] if basis is not None else float("nan"))
        B = base_BD.shape[0]
        full = {**info, "pair_source": [cfg.source] * B, "d2_orthogonalised": [True] * B, "rotate_deg": [cfg.rotate_deg] * B}
        return Proposal(unit_BD=like_base(u_BD, base_BD, self.ctx.device), info=full)
