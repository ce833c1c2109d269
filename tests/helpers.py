"""Builders shared by the tests: small SAEs, site statistics, direction contexts, config copies.

The one home for test builders; test files import from here (``from helpers import ...``, the
tests directory is on ``sys.path`` under pytest), never from each other or from conftest.
Fixtures stay in ``conftest.py``, ``hf_fixtures.py`` and ``slurm_cluster.py``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

# The tiny model of conftest's ``tiny_model_dir`` (d_vocab comes from its tokenizer).
TINY = dict(n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64, n_ctx=16, act_fn="gelu_new", normalization_type="LN")

# The tiny tokenizer (300 tokens) spells names in a few tokens: short names and one short
# template keep IOI prompts within the tiny model's n_ctx = 16.
TINY_TEMPLATES = ("{A} and {B}. {S} to",)
TINY_NAMES = ("the", "is", "in", "a")  # one token each with a leading space


def with_(cfg, **sections):
    """``with_(cfg, run={'seed': 1})``: a copy of cfg with fields of sections replaced."""
    return replace(cfg, **{k: replace(getattr(cfg, k), **v) if isinstance(v, dict) else v for k, v in sections.items()})


# ----------------------------------------------------------------------------- SAEs


def make_sae(d_in: int, d_sae: int, hook: str, seed: int = 0, b_enc: float = -0.5, model_name: str | None = None):
    """A standard ReLU SAE reading ``hook``: unit-norm tied encoder/decoder drawn from the global
    RNG after ``torch.manual_seed(seed)``, a negative encoder bias (sparse: only well-aligned
    latents fire), zero decoder bias. Ready for ``save_model``."""
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    meta = {"hook_name": hook} if model_name is None else {"hook_name": hook, "model_name": model_name}
    torch.manual_seed(seed)
    sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae, metadata=SAEMetadata(**meta)))
    with torch.no_grad():
        W = torch.randn(d_in, d_sae)
        sae.W_enc.copy_(W / W.norm(dim=0))
        sae.W_dec.copy_((W / W.norm(dim=0)).T)
        sae.b_enc.fill_(b_enc)
        sae.b_dec.zero_()
    return sae


def make_direction_sae(d_in: int, d_sae: int, seed: int, decoder_norms: tuple[float, float] | None = None):
    """The small SAE of the direction-type tests: random unit decoder rows (optionally scaled
    linearly from ``decoder_norms[0]`` to ``decoder_norms[1]``, so that normalising matters), the
    tied encoder, encoder bias -2 (a handful of latents fire on a Gaussian input), a small random
    decoder bias. Drawn from its own generator seeded with ``seed``."""
    from sae_lens import StandardSAE, StandardSAEConfig

    g = torch.Generator().manual_seed(seed)
    sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae))
    w_SD = torch.randn(d_sae, d_in, generator=g)
    w_SD /= w_SD.norm(dim=-1, keepdim=True)
    with torch.no_grad():
        dec_SD = w_SD if decoder_norms is None else w_SD * torch.linspace(*decoder_norms, d_sae)[:, None]
        sae.W_dec.copy_(dec_SD)
        sae.W_enc.copy_(w_SD.T)
        sae.b_enc.fill_(-2.0)
        sae.b_dec.copy_(0.1 * torch.randn(d_in, generator=g))
    return sae


def make_stats(d_in: int, d_sae: int, seed: int, n_dead: int):
    """Synthetic ``SiteStats``: random mean and covariance, firing frequencies on a coarse grid
    (many exact ties, to exercise tie-breaking) with latents ``0..n_dead-1`` dead."""
    from sensdir.walk_types import SiteStats

    g = torch.Generator().manual_seed(seed)
    mu_D = torch.randn(d_in, generator=g)
    a_DD = torch.randn(d_in, d_in, generator=g) / d_in**0.5
    cov_DD = a_DD @ a_DD.T + 0.01 * torch.eye(d_in)
    freq_S = torch.randint(1, 12, (d_sae,), generator=g).float() / 100
    freq_S[:n_dead] = 0.0
    return SiteStats(mu_D=mu_D, cov_DD=cov_DD, chol_DD=torch.linalg.cholesky(cov_DD), median_norm=3.5, firing_freq_S=freq_S)


def make_direction_context(sae, stats, n_pool: int, seed: int):
    """A ``DirectionContext`` with a pool of ``n_pool`` Gaussian activations (std 2)."""
    from sensdir.walk_types import DirectionContext

    d_in = stats.mu_D.shape[0]
    g = torch.Generator().manual_seed(seed)
    return DirectionContext(sae=sae, stats=stats, pool_PD=2.0 * torch.randn(n_pool, d_in, generator=g))


def random_bases(n: int, d_in: int, seed: int) -> torch.Tensor:
    """``n`` base activations, Gaussian with std 2."""
    return 2.0 * torch.randn(n, d_in, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- direction types


def build_direction(name: str, ctx, **kw):
    """The registered direction type ``name`` built from its config class with ``kw``."""
    from sensdir.directions import DIRECTIONS

    return DIRECTIONS.build(DIRECTIONS.get(name).config_cls(**kw), ctx)


def propose(name: str, ctx, base_BD: torch.Tensor, seed: int = 0, **kw):
    """One ``Proposal`` of direction type ``name`` for every row of ``base_BD``."""
    idx_B = torch.arange(base_BD.shape[0])
    return build_direction(name, ctx, **kw).propose(base_BD, idx_B, torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- embedded model


def heldout_activations(sites: list[str], max_rows: int = 24, seed: int | None = None) -> dict[str, torch.Tensor]:
    """Activations of the shipped embedded model on about ``max_rows`` held-out rows of its
    training mixture (prose, IOI and first-letter windows, as the SAE cards are measured on), per
    site. The caller skips when the embedded model is not built."""
    from sensdir.embedded.sae_data import collect_activations, load_model
    from sensdir.embedded.sae_mixture import mixture_rows

    if seed is not None:
        torch.manual_seed(seed)
    model = load_model()
    rows = mixture_rows(model, "heldout", model.cfg.n_ctx, max_rows=max_rows).rows
    return collect_activations(model, rows, sites)


# ----------------------------------------------------------------------------- shape checks


def shape_checker(fn):
    """The type checker of jaxtyping's import hook under pytest (pyproject's addopts:
    ``--jaxtyping-packages=sensdir.engine,sensdir.metrics,helpers.shape_checker``).

    beartype with PEP 484's numeric tower (an ``int`` passes where ``float`` is annotated, as
    for mypy). While ``torch.compile`` traces a function the checks are skipped: dynamo cannot
    trace jaxtyping's isinstance checks, and the compiled kernel is compared with the checked
    eager one by the tests anyway.
    """
    import functools

    from beartype import BeartypeConf, beartype

    checked = beartype(conf=BeartypeConf(is_pep484_tower=True))(fn)
    if isinstance(fn, type) or checked is fn:
        return checked

    @functools.wraps(fn)
    def call(*args, **kwargs):
        if torch.compiler.is_compiling():
            return fn(*args, **kwargs)
        return checked(*args, **kwargs)

    return call


# ----------------------------------------------------------------------------- shards


def reseal(parquet) -> None:
    """Record a deliberately rewritten shard's new size and sha256 in its manifest, as if the
    job had written it (tests that hand-edit shards' contents, not their integrity)."""
    from pathlib import Path

    from sensdir.artifacts.layout import ShardFiles, ShardId
    from sensdir.artifacts.records import file_digest, read_json, write_json_atomic

    parquet = Path(parquet)
    sid = ShardId.parse(parquet.name)
    assert sid is not None, parquet
    files = ShardFiles(parquet.parent, sid)
    manifest = read_json(files.manifest)
    assert manifest is not None, files.manifest
    size, sha = file_digest(parquet)
    write_json_atomic(files.manifest, {**manifest, "parquet_bytes": size, "parquet_sha256": sha})


def tiny_overrides(model_dir: Path, sae_dir: Path, out: Path | None = None, name: str | None = None) -> list[str]:
    """A small job on the tiny model and SAE of conftest.py, as command-line overrides."""
    run = ([f"run.out_dir={out}"] if out else []) + ([f"run.name={name}"] if name else [])
    return [
        f"model.path={model_dir}",
        "sae.source=disk",
        f"sae.path={sae_dir}",
        "data.n_ctx=8",
        "data.n_prompts=6",
        "data.n_stats=40",
        "data.n_pool=10",
        "schedule.n_steps=5",
        *run,
        "run.progress=false",
    ]
