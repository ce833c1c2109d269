"""Train the embedded SAE family on the embedded language model.

    python -m sensdir.embedded.train_saes              # the shipped family (seed 0)
    python -m sensdir.embedded.train_saes --smoke      # tiny run on a random model, to /tmp

For each site (``blocks.1.hook_resid_pre`` -- the default -- and ``blocks.3.hook_resid_pre``)
it trains, with sae_lens's own ``SAETrainer`` fed from an in-memory activation buffer, a
family of d_sae = 1024 (4x) SAEs:

* ``l1-sparse``, ``l1-mid``, ``l1-dense``  -- standard ReLU SAEs with an L1 penalty,
* ``topk-16``, ``topk-48``                  -- TopK SAEs,
* ``gated``                                 -- sae_lens's gated SAE (sae_lens's gated loss),

and, at ``blocks.1.hook_resid_pre`` only,

* ``gated-paper-sparse``, ``gated-paper-mid`` -- the same gated SAE trained with the loss of
  Rajamanoharan et al. 2024 (``sensdir.embedded.gated_paper``: frozen decoder in the auxiliary
  term, plain L1 of ReLU(pi_gate), unit-norm decoder rows), at the same settings.

Activations
    Prose of the corpus split (``sensdir.embedded.corpus``) is tokenized with the model's
    tokenizer, every document preceded by the end-of-text token (id 0) -- the layout the model
    was trained on -- and the stream is cut into consecutive windows of ``n_ctx`` = 128 tokens
    (no BOS is prepended: the model was trained on windows starting anywhere, and the sensdir
    prompts carry no BOS either). The model runs only up to the deepest site
    (``stop_at_layer``). Position 0 of every window is excluded: whatever its token, the first
    position attends only to itself and its residual is an outlier (attention-sink-like), not
    typical text. Train windows are shuffled with the seed; the activations are generated once
    per site, shuffled again with the seed, and the whole family reads the same buffer (one
    pass). Inputs are scaled to mean norm sqrt(d_in) during training (sae_lens's
    ``expected_average_only_in``; the factor is folded into the weights at the end), and
    ``b_dec`` starts at the (scaled) activation mean. Evaluation uses the windows of the
    ``heldout`` split, position 0 excluded likewise.

Outputs (under ``sensdir/embedded/assets/saes`` unless ``--out``)
    ``<site>/<name>/``  ``cfg.json`` + ``sae_weights.safetensors`` (sae_lens ``save_model``;
    weights stored as float16, ``cfg.dtype`` is float32 so ``SAE.load_from_disk(path)``
    returns a float32 SAE), ``firing_freq.safetensors`` (held-out firing frequency per
    latent), ``card.json``; plus ``index.json`` and ``CARDS.md`` for the whole family.

Everything is deterministic given ``--seed`` (CPU, fixed thread count).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import platform
import shlex
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

# Idle OpenMP workers sleep instead of spinning: on a small shared CPU, spinning workers made
# every small op ~100x slower with 2 threads. Only effective if torch is not imported yet.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from sensdir.embedded.sae_metrics import (
    ReconstructionStats,
    ce_loss_recovered,
    dead_fraction,
)

ASSETS_DIR = Path(__file__).resolve().parent / "assets" / "saes"
SITES: tuple[str, ...] = ("blocks.1.hook_resid_pre", "blocks.3.hook_resid_pre")
DEFAULT_SITE = SITES[0]
GATED_PAPER_SPARSE_L1 = 5.3
GATED_PAPER_MID_L1 = 3.3
D_SAE = 1024
MODEL_NAME = "sensdir-embedded"


@dataclasses.dataclass(frozen=True)
class SaeSpec:
    name: str
    architecture: str  # "standard" | "topk" | "gated"
    l1_coefficient: float | None = None
    k: int | None = None
    loss: str = "sae_lens"  # "sae_lens" | "paper" (gated only: sensdir.embedded.gated_paper)

    @property
    def kind(self) -> str:
        """``architecture``, or ``gated-paper`` for a gated SAE trained with the paper's loss."""
        return "gated-paper" if self.loss == "paper" else self.architecture


# L1 coefficients act on inputs scaled to mean norm sqrt(d_in) = 16 (sae_lens's L1 term is
# sum_i |f_i| * ||W_dec,i||), aiming at L0 ~ 10 / 25 / 60 (sparse / mid / dense).
FAMILY: dict[str, tuple[SaeSpec, ...]] = {
    site: (
        SaeSpec("l1-sparse", "standard", l1_coefficient=4.0),
        SaeSpec("l1-mid", "standard", l1_coefficient=2.5),
        SaeSpec("l1-dense", "standard", l1_coefficient=1.4),
        SaeSpec("topk-16", "topk", k=16),
        SaeSpec("topk-48", "topk", k=48),
        SaeSpec("gated", "gated", l1_coefficient=3.0),
    )
    for site in SITES
}
# Gated SAEs with the paper's loss (blocks.1 only), appended so that the other SAEs' seeds
# (which depend on the position in the family) are unchanged. lambda acts on the plain L1 of
# ReLU(pi_gate) with unit-norm decoder rows, inputs scaled as above; aimed at L0 ~ 11 / 25
# (the L1 SAEs l1-sparse / l1-mid).
FAMILY[DEFAULT_SITE] = FAMILY[DEFAULT_SITE] + (
    SaeSpec("gated-paper-sparse", "gated", l1_coefficient=GATED_PAPER_SPARSE_L1, loss="paper"),
    SaeSpec("gated-paper-mid", "gated", l1_coefficient=GATED_PAPER_MID_L1, loss="paper"),
)


@dataclasses.dataclass
class TrainSettings:
    seed: int = 0
    train_tokens: int = 1_200_000  # activations per SAE (~one pass over the train split)
    batch_size: int = 1024
    lr: float = 3e-3
    eval_rows: int = 1024  # held-out rows for FVU / gamma / L0 / firing frequency
    ce_rows: int = 256  # held-out rows for the CE-loss splice
    threads: int = 2
    device: str = "cpu"


# --------------------------------------------------------------------------------------
# model and tokens
# --------------------------------------------------------------------------------------


def site_layer(site: str) -> int:
    parts = site.split(".")
    if len(parts) != 3 or parts[0] != "blocks":
        raise ValueError(f"unsupported site {site!r} (expected blocks.<L>.hook_...)")
    return int(parts[1])


def random_model(seed: int = 0, d_vocab: int = 8192):
    """A randomly initialised HookedTransformer with the embedded model's shape (for smoke tests)."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(
        n_layers=4,
        d_model=256,
        n_heads=8,
        d_head=32,
        d_mlp=1024,
        act_fn="gelu_new",
        normalization_type="LN",
        d_vocab=d_vocab,
        n_ctx=128,
        seed=seed,
        device="cpu",
    )
    return HookedTransformer(cfg)


def _eot_id(model) -> int:
    """The end-of-text token that separates documents (the tokenizer's BOS/EOS; 0 for the
    embedded tokenizer)."""
    tok = getattr(model, "tokenizer", None)
    for attr in ("eos_token_id", "bos_token_id"):
        v = getattr(tok, attr, None) if tok is not None else None
        if v is not None:
            return int(v)
    raise ValueError("the tokenizer has neither an EOS nor a BOS token")


def token_stream(model, docs: Sequence[str]) -> torch.Tensor:
    """All documents tokenized (no special tokens added), each preceded by the end-of-text
    token -- the same layout the embedded model was trained on."""
    tok = model.tokenizer
    eot = _eot_id(model)
    out: list[int] = []
    for i in range(0, len(docs), 256):
        for ids in tok(list(docs[i : i + 256]), add_special_tokens=False)["input_ids"]:
            out.append(eot)
            out.extend(ids)
    return torch.tensor(out, dtype=torch.long)


def stream_rows(stream: torch.Tensor, n_ctx: int) -> torch.Tensor:
    """Cut a token stream into consecutive non-overlapping ``[rows, n_ctx]`` windows (a trailing
    partial window is dropped). Windows start anywhere in a document, as the embedded model's
    training windows do; position 0 is excluded from SAE data downstream."""
    n = stream.numel() // n_ctx
    if n == 0:
        raise ValueError(f"a stream of {stream.numel()} tokens holds no window of {n_ctx}")
    return stream[: n * n_ctx].view(n, n_ctx).clone()


def corpus_rows(
    model, split: str, n_ctx: int, max_rows: int | None = None, seed: int | None = None
) -> torch.Tensor:
    """Windows of the embedded prose corpus (``sensdir.embedded.corpus``). With ``seed`` the
    windows are shuffled with it before ``max_rows`` are kept; else the first ``max_rows``."""
    from sensdir.embedded import corpus

    rows = stream_rows(token_stream(model, corpus.documents(split)), n_ctx)
    if seed is not None:
        rows = rows[torch.randperm(rows.shape[0], generator=torch.Generator().manual_seed(seed))]
    return rows[:max_rows] if max_rows is not None else rows


def load_model():
    """The embedded model (``sensdir.embedded.load_embedded_model``, else the asset directory)."""
    try:
        from sensdir.embedded import load_embedded_model
    except ImportError:
        from sensdir.loading import embedded_model_dir, load_model_dir

        return load_model_dir(embedded_model_dir())
    return load_embedded_model()


def synthetic_rows(model, n_rows: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    n_ctx = model.cfg.n_ctx
    return torch.randint(0, model.cfg.d_vocab, (n_rows, n_ctx), generator=g)


@torch.no_grad()
def collect_activations(
    model, rows: torch.Tensor, sites: Sequence[str], batch_rows: int = 64
) -> dict[str, torch.Tensor]:
    """Residual activations at ``sites`` for every position but 0: ``{site: [rows*(n_ctx-1), d]}``."""
    stop = max(site_layer(s) for s in sites) + 1
    n_rows, n_ctx = rows.shape
    d = model.cfg.d_model
    out = {s: torch.empty(n_rows * (n_ctx - 1), d, dtype=torch.float32) for s in sites}
    names = set(sites)
    per = n_ctx - 1
    for i in range(0, n_rows, batch_rows):
        batch = rows[i : i + batch_rows].to(model.cfg.device)
        _, cache = model.run_with_cache(
            batch, stop_at_layer=stop, names_filter=lambda n: n in names
        )
        for s in sites:
            a = cache[s][:, 1:, :].reshape(-1, d).float().cpu()
            out[s][i * per : i * per + a.shape[0]] = a
    return out


# --------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------


def _batches(acts: torch.Tensor, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    """Endless shuffled batches; ``acts`` is already shuffled, later epochs re-shuffle."""
    n = acts.shape[0]
    epoch = 0
    order = torch.arange(n)
    while True:
        for i in range(0, n - batch_size + 1, batch_size):
            yield acts[order[i : i + batch_size]]
        epoch += 1
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))


def _metadata(site: str, spec: SaeSpec, settings: TrainSettings, n_ctx: int):
    from sae_lens.saes.sae import SAEMetadata

    return SAEMetadata(
        model_name=MODEL_NAME,
        hook_name=site,
        hook_head_index=None,
        context_size=n_ctx,
        prepend_bos=False,
        seqpos_slice=[1, None],
        sensdir_name=spec.name,
        sensdir_seed=settings.seed,
        sensdir_loss=spec.loss,
        stored_weight_dtype="float16",
    )


def make_training_sae(spec: SaeSpec, site: str, d_in: int, steps: int, settings, n_ctx):
    from sae_lens import (
        GatedTrainingSAE,
        GatedTrainingSAEConfig,
        StandardTrainingSAE,
        StandardTrainingSAEConfig,
        TopKTrainingSAE,
        TopKTrainingSAEConfig,
    )

    common: dict[str, Any] = dict(
        d_in=d_in,
        d_sae=D_SAE,
        dtype="float32",
        device=settings.device,
        apply_b_dec_to_input=True,
        normalize_activations="expected_average_only_in",
        metadata=_metadata(site, spec, settings, n_ctx),
    )
    warm = max(1, steps // 20)
    if spec.architecture == "gated" and spec.loss == "paper":
        from sensdir.embedded.gated_paper import PaperGatedTrainingSAE

        # decoder rows start at unit norm (the paper's constraint); W_enc = W_dec^T as in sae_lens
        return PaperGatedTrainingSAE(
            GatedTrainingSAEConfig(
                **common, l1_coefficient=spec.l1_coefficient, l1_warm_up_steps=warm, decoder_init_norm=1.0
            )
        )
    if spec.loss != "sae_lens":
        raise ValueError(f"loss {spec.loss!r} is only available for gated SAEs")
    if spec.architecture == "standard":
        return StandardTrainingSAE(
            StandardTrainingSAEConfig(
                **common, l1_coefficient=spec.l1_coefficient, l1_warm_up_steps=warm
            )
        )
    if spec.architecture == "gated":
        return GatedTrainingSAE(
            GatedTrainingSAEConfig(
                **common, l1_coefficient=spec.l1_coefficient, l1_warm_up_steps=warm
            )
        )
    if spec.architecture == "topk":
        return TopKTrainingSAE(TopKTrainingSAEConfig(**common, k=spec.k))
    raise ValueError(spec.architecture)


def train_one(
    spec: SaeSpec,
    site: str,
    acts: torch.Tensor,
    act_mean: torch.Tensor,
    scale: float,
    settings: TrainSettings,
    n_ctx: int,
    sae_seed: int,
):
    from sae_lens import SAETrainer
    from sae_lens.config import SAETrainerConfig

    steps = settings.train_tokens // settings.batch_size
    torch.manual_seed(sae_seed)
    sae = make_training_sae(spec, site, acts.shape[1], steps, settings, n_ctx)
    with torch.no_grad():
        sae.b_dec.copy_(act_mean * scale)
    tcfg = SAETrainerConfig(
        total_training_samples=steps * settings.batch_size,
        train_batch_size_samples=settings.batch_size,
        lr=settings.lr,
        lr_end=settings.lr,  # SAETrainer asserts lr_end is set; ignored by "constant"
        lr_scheduler_name="constant",
        lr_warm_up_steps=max(1, steps // 50),
        lr_decay_steps=max(1, steps // 5),  # linear decay to 0 over the last 20%
        device=settings.device,
        dead_feature_window=max(10, steps // 8),
        feature_sampling_window=max(10, steps // 4),
        n_checkpoints=0,
        save_final_checkpoint=False,
        n_batches_for_norm_estimate=1,
    )
    trainer = SAETrainer(
        cfg=tcfg, sae=sae, data_provider=_batches(acts, settings.batch_size, sae_seed)
    )
    # the factor was measured on the whole buffer; preset so fit() does not re-estimate it
    # (it folds it into the weights at the end either way)
    trainer.activation_scaler.scaling_factor = scale
    if spec.loss == "paper":
        from sensdir.embedded.gated_paper import attach

        attach(trainer)  # renormalise the decoder rows after every optimizer step
    trained = trainer.fit()
    return trained


def ship(training_sae, out_dir: Path, device: str = "cpu"):
    """Save the inference SAE with sae_lens ``save_model``: float16 weights, float32 cfg dtype.

    Returns the shipped SAE reloaded as float32 (so metrics describe the shipped weights)."""
    from sae_lens import SAE

    with tempfile.TemporaryDirectory() as tmp:
        training_sae.save_inference_model(tmp)
        inf = SAE.load_from_disk(tmp, dtype="float32")
    inf = inf.to(device="cpu", dtype=torch.float16)
    out_dir.mkdir(parents=True, exist_ok=True)
    _, cfg_path = inf.save_model(out_dir)
    cfg = json.loads(cfg_path.read_text())
    cfg["dtype"] = "float32"  # sae_lens's disk loader casts the float16 tensors to this
    cfg_path.write_text(json.dumps(cfg, indent=1, sort_keys=True))
    for f in out_dir.iterdir():
        f.chmod(0o644)
    return SAE.load_from_disk(out_dir, device=device)


# --------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------


@torch.no_grad()
def recon_stats(sae, acts: torch.Tensor, batch: int = 8192) -> ReconstructionStats:
    st = ReconstructionStats(sae.cfg.d_sae)
    for i in range(0, acts.shape[0], batch):
        x = acts[i : i + batch]
        f = sae.encode(x)
        st.update(x, sae.decode(f), f)
    return st


@torch.no_grad()
def ce_with_splice(model, rows: torch.Tensor, site: str, fn=None, batch_rows: int = 32) -> float:
    """Mean next-token CE over predicted positions 1..n_ctx-2 (the loss of predicting token t+1
    from positions t >= 1), with ``fn`` applied to the site activation at positions >= 1."""

    def hook(act, hook):  # noqa: ARG001
        act[:, 1:] = fn(act[:, 1:])
        return act

    hooks = [(site, hook)] if fn is not None else []
    total, count = 0.0, 0
    for i in range(0, rows.shape[0], batch_rows):
        b = rows[i : i + batch_rows].to(model.cfg.device)
        lpt = model.run_with_hooks(b, return_type="loss", loss_per_token=True, fwd_hooks=hooks)
        lpt = lpt[:, 1:].double()
        total += float(lpt.sum())
        count += lpt.numel()
    return total / count


def _sae_fn(sae):
    def f(x):
        shape = x.shape
        return sae(x.reshape(-1, shape[-1])).reshape(shape).to(x.dtype)

    return f


# --------------------------------------------------------------------------------------
# cards
# --------------------------------------------------------------------------------------

ARCH_NOTES = {
    "standard": "ReLU encoder, loss = MSE + l1_coefficient * sum_i |f_i| * ||W_dec,i|| (sae_lens 'standard')",
    "topk": "TopK activation (keep k largest pre-activations, ReLU), + AuxK loss on dead latents (sae_lens 'topk')",
    "gated": (
        "sae_lens 'gated': gate path W_enc+b_gate, magnitude path W_enc*exp(r_mag)+b_mag. "
        "Training loss = MSE + l1 * sum_i ReLU(pi_gate,i) * ||W_dec,i|| + aux MSE of ReLU(pi_gate) @ W_dec + b_dec. "
        "Differs from the loss of Rajamanoharan et al. 2024 (checked in sae_lens 6.54.12's gated_sae.py): "
        "the auxiliary reconstruction uses the live W_dec and b_dec (no stop-gradient / frozen copy), "
        "and the sparsity penalty is weighted by the decoder row norms (the paper's is the plain L1 of "
        "ReLU(pi_gate); sae_lens does not constrain decoder rows to unit norm)."
    ),
    "gated-paper": (
        "the same gated SAE (sae_lens 'gated' on disk, loads as sae_lens GatedSAE) trained with the "
        "loss of Rajamanoharan et al. 2024: MSE + l1 * ||ReLU(pi_gate)||_1 + aux MSE of "
        "ReLU(pi_gate) @ W_dec.detach() + b_dec.detach() (frozen decoder: the aux term trains only the "
        "gate path), decoder rows unit norm during training (gradient component parallel to each row "
        "removed before the step, rows renormalised after it; in the shipped weights the rows have norm "
        "1/input_scale_folded since the input scaling is folded in). sensdir.embedded.gated_paper."
    ),
}

HP_NOTES = """How the settings were chosen (site blocks.1.hook_resid_pre, held-out L0 / FVU):

* 400k-token runs: lr 1e-3, batch 2048: L1 2 -> 117 / 0.29, L1 4 -> 60 / 0.49, L1 8 -> 39 / 0.77,
  gated 2 -> 169 / 0.12, gated 4 -> 86 / 0.21. lr 3e-3, batch 2048: L1 4 -> 22.8 / 0.42,
  L1 8 -> 11.1 / 0.67. lr 1e-3, batch 1024: L1 4 -> 37.2 / 0.44, L1 8 -> 23.6 / 0.70.
  lr 3e-3, batch 1024: L1 4 -> 16.8 / 0.41, L1 8 -> 6.8 / 0.64. With this few steps the SAEs
  are step-limited, so the larger lr and the smaller batch were kept.
* 1.2M-token runs with the final settings: L1 4 -> 11.0 / 0.40, L1 2 -> 35.5 / 0.25,
  L1 1 -> 91.9 / 0.15, gated 6 -> 6.7 / 0.34; the shipped coefficients interpolate these
  towards L0 ~ 10 / 25 / 60 (L1) and ~ 25 (gated).
* The same coefficients are used at both sites (inputs are normalised to the same mean norm).
* Gated, paper loss (blocks.1 only; lambda on the plain L1 of ReLU(pi_gate), unit-norm decoder
  rows), 1.2M tokens, final settings: lambda 6 -> 9.0 / 0.317, lambda 3 -> 29.1 / 0.202; the
  shipped 5.3 / 3.3 interpolate (log-log) towards the L0 of l1-sparse / l1-mid (~11 / ~25).
"""

CE_FORMULA = (
    "(CE_zero_ablation - CE_with_reconstruction) / (CE_zero_ablation - CE_clean); "
    "site activation replaced (reconstruction) or set to 0 (ablation) at positions >= 1, "
    "mean next-token CE over predictions made at positions >= 1 of held-out rows"
)


def _site_key(site: str) -> int:
    """A stable per-site integer (so a site's data and seeds do not depend on which other
    sites are trained in the same invocation)."""
    return zlib.crc32(site.encode()) % 1_000_000


def collect_cards(out_root: Path, family: dict[str, tuple[SaeSpec, ...]] | None = None) -> list[dict[str, Any]]:
    """All ``card.json`` under ``out_root``, in site order then family order."""
    family = family or FAMILY
    cards = [json.loads(p.read_text()) for p in sorted(out_root.glob("*/*/card.json"))]

    def key(c):
        site_rank = SITES.index(c["site"]) if c["site"] in SITES else len(SITES)
        names = [sp.name for sp in family.get(c["site"], ())]
        name_rank = names.index(c["name"]) if c["name"] in names else len(names)
        return (site_rank, c["site"], name_rank, c["name"])

    return sorted(cards, key=key)


def write_cards(out_root: Path, family: dict[str, tuple[SaeSpec, ...]] | None = None) -> None:
    """(Re)write ``index.json`` and ``CARDS.md`` from every card under ``out_root``."""
    cards = collect_cards(out_root, family)
    if not cards:
        return
    index = [
        {
            "site": c["site"],
            "name": c["name"],
            "path": c["path"],
            "architecture": c["architecture"],
            "loss": c.get("loss", "sae_lens"),
            "d_sae": c["d_sae"],
            "k": c.get("k"),
            "l1_coefficient": c.get("l1_coefficient"),
            "l0": c["l0"],
            "fvu": c["fvu"],
            "ce_loss_recovered": c["ce_loss_recovered"],
            "gamma": c["gamma"],
            "dead_fraction": c["dead_fraction"],
            "default": c["site"] == DEFAULT_SITE,
        }
        for c in cards
    ]
    (out_root / "index.json").write_text(
        json.dumps({"default_site": DEFAULT_SITE, "saes": index}, indent=1) + "\n"
    )
    c0 = cards[0]
    lines = [
        "# Embedded SAE family",
        "",
        f"SAEs on the embedded model (`{MODEL_NAME}`, 4 layers, d_model {c0['d_in']}), "
        f"d_sae = {c0['d_sae']} (4x), trained with sae_lens {c0['sae_lens_version']} `SAETrainer` on CPU.",
        "",
        *(
            [
                f"Command: `{c0['command']}` (seed {c0['seed']}; deterministic on CPU with {c0['threads']} threads; "
                "`--act-cache DIR` only keeps the model's activations on disk between runs, the SAEs do not depend on it)."
            ]
            if len({c["command"] for c in cards}) == 1
            else ["Commands (per SAE; each SAE's data and init depend only on the seed, site and name):"]
            + [f"* `{cmd}`" for cmd in sorted({c["command"] for c in cards})]
        ),
        "",
        "Load: `sae_lens.SAE.load_from_disk('sensdir/embedded/assets/saes/<site>/<name>')` -> float32 SAE "
        "(weights are stored as float16; `cfg.json` says float32, and sae_lens's disk loader casts). "
        "The hook is `sae.cfg.metadata.hook_name`.",
        "",
        "Metrics on held-out prose "
        f"({c0['eval_tokens']:,} activations for L0/FVU/gamma/dead; {c0['ce_tokens']:,} predicted tokens for CE), "
        "position 0 of every 128-token window excluded everywhere:",
        "",
        "* L0 = mean number of non-zero latents per token.",
        "* FVU = sum ||x - x_hat||^2 / sum ||x - mean(x)||^2.",
        f"* CE rec. = {CE_FORMULA}.",
        "* gamma = E[x_hat . x] / E[||x||^2] (< 1: shrinkage).",
        "* dead = fraction of latents that never fire on the held-out activations.",
        "",
        "| site | name | architecture | d_sae | k / L1 coeff | train tokens | L0 | FVU | CE rec. | gamma | dead | CE clean / zero-abl / recon |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cards:
        hp = f"k={c['k']}" if c.get("k") else f"l1={c['l1_coefficient']}"
        arch = c["architecture"]
        if arch == "gated":
            arch += " (paper loss)" if c.get("loss") == "paper" else " (sae_lens loss)"
        lines.append(
            f"| `{c['site']}` | {c['name']} | {arch} | {c['d_sae']} | {hp} | "
            f"{c['training_tokens']:,} | {c['l0']:.1f} | {c['fvu']:.3f} | {c['ce_loss_recovered']:.3f} | "
            f"{c['gamma']:.3f} | {c['dead_fraction']:.3f} | "
            f"{c['ce_clean']:.3f} / {c['ce_zero_ablation']:.3f} / {c['ce_reconstruction']:.3f} |"
        )
    lines += [
        "",
        HP_NOTES,
        "Architectures:",
        "",
        *[f"* **{k}**: {v}" for k, v in ARCH_NOTES.items()],
        "",
        "Training: Adam (lr {lr}, 2% linear warm-up, constant, linear decay to 0 over the last 20%), "
        "batch {bs}, {tt:,} activations per SAE read in order from a shuffled buffer of {nb:,} "
        "train-split activations per site (the same buffer for the whole family; re-shuffled "
        "when it runs out), inputs scaled to mean norm sqrt(d_in) "
        "(factor folded into the weights afterwards), b_dec initialised at the activation mean, "
        "L1 coefficient warmed up over the first 5% of steps.".format(
            lr=c0["lr"], bs=c0["batch_size"], tt=c0["training_tokens"], nb=c0["train_buffer_activations"]
        ),
        "",
        "CPU time for training (all SAEs listed): {:.0f} s ({} threads).".format(
            sum(c["train_cpu_s"] for c in cards), c0["threads"]
        ),
        "",
        "Files per SAE: `cfg.json`, `sae_weights.safetensors` (sae_lens format), "
        "`firing_freq.safetensors` (key `firing_freq`, float32 [d_sae], held-out firing frequency), `card.json`.",
        "",
    ]
    (out_root / "CARDS.md").write_text("\n".join(lines))


# --------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------


def run(
    settings: TrainSettings,
    out_root: Path,
    sites: Sequence[str] = SITES,
    names: Sequence[str] | None = None,
    smoke: bool = False,
    command: str = "",
    family: dict[str, tuple[SaeSpec, ...]] | None = None,
    act_cache: Path | None = None,
) -> list[dict[str, Any]]:
    family = family or FAMILY
    threads_before = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        return _run(settings, out_root, sites, names, smoke, command, family, act_cache)
    finally:
        torch.set_num_threads(threads_before)


def _model_sha256() -> str:
    p = ASSETS_DIR.parent / "model" / "model.safetensors"
    return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "unknown"


def _acts_key(model, train_rows: torch.Tensor, held_rows: torch.Tensor, sites: Sequence[str]) -> str:
    """Hash of everything the activation buffers depend on: weights, token rows, sites."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().cpu().contiguous().numpy().tobytes())
    h.update(train_rows.numpy().tobytes())
    h.update(held_rows.numpy().tobytes())
    h.update(repr(sorted(sites)).encode())
    return h.hexdigest()[:16]


def _run(settings, out_root, sites, names, smoke, command, family, act_cache=None) -> list[dict[str, Any]]:
    import sae_lens
    from safetensors.torch import save_file

    torch.manual_seed(settings.seed)
    t_start, c_start = time.time(), time.process_time()

    if smoke:
        model = random_model(settings.seed)
        n_ctx = model.cfg.n_ctx
        n_train_rows = math.ceil(settings.train_tokens / (n_ctx - 1))
        train_rows = synthetic_rows(model, n_train_rows, settings.seed)
        held_rows = synthetic_rows(model, settings.eval_rows, settings.seed + 1)
        data_desc = "synthetic uniform tokens, random model"
    else:
        model = load_model()
        n_ctx = model.cfg.n_ctx
        # every train window (shuffled), whatever train_tokens is: the buffer, and so the
        # activation cache, does not depend on how long the SAEs train
        train_rows = corpus_rows(model, "train", n_ctx, None, seed=settings.seed)
        held_rows = corpus_rows(model, "heldout", n_ctx, settings.eval_rows)
        data_desc = "sensdir.embedded.corpus prose: train split for training, heldout split for evaluation"
    model_sha = "random-init" if smoke else _model_sha256()
    model.to(settings.device)
    model.eval()
    if train_rows.shape[0] * (n_ctx - 1) < settings.train_tokens:
        print(
            f"[train_saes] only {train_rows.shape[0] * (n_ctx - 1):,} train activations; "
            "the SAEs will see some more than once",
            flush=True,
        )
    print(
        f"[train_saes] rows: train {tuple(train_rows.shape)}, held-out {tuple(held_rows.shape)}",
        flush=True,
    )

    t0 = time.time()
    # with a cache, collect every standard site so that runs on a subset reuse the buffers
    collect_sites = sorted(set(sites) | (set(SITES) if act_cache is not None else set()))
    cache_file = None
    if act_cache is not None:
        cache_file = Path(act_cache) / f"acts-{_acts_key(model, train_rows, held_rows, collect_sites)}.pt"
    if cache_file is not None and cache_file.is_file():
        blob = torch.load(cache_file)
        train_acts, held_acts = blob["train"], blob["held"]
        print(f"[train_saes] activations loaded from {cache_file}", flush=True)
    else:
        train_acts = collect_activations(model, train_rows, collect_sites)
        held_acts = collect_activations(model, held_rows, collect_sites)
        print(f"[train_saes] activations collected in {time.time() - t0:.0f}s", flush=True)
        if cache_file is not None:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(".tmp")
            torch.save({"train": train_acts, "held": held_acts}, tmp)
            os.replace(tmp, cache_file)
    ce_rows = held_rows[: settings.ce_rows]

    cards: list[dict[str, Any]] = []
    for site in sites:
        si = _site_key(site)
        acts = train_acts[site]
        perm = torch.randperm(acts.shape[0], generator=torch.Generator().manual_seed(settings.seed * 1_000_003 + si))
        acts = acts[perm].to(settings.device)
        act_mean = acts.mean(0)
        scale = math.sqrt(acts.shape[1]) / float(acts.norm(dim=-1).mean())
        held = held_acts[site].to(settings.device)
        ce_clean = ce_with_splice(model, ce_rows, site)
        ce_zero = ce_with_splice(model, ce_rows, site, lambda x: torch.zeros_like(x))
        print(f"[train_saes] {site}: scale {scale:.4f}, CE clean {ce_clean:.4f}, zero-ablated {ce_zero:.4f}", flush=True)
        for ni, spec in enumerate(family[site]):
            if names and spec.name not in names:
                continue
            sae_seed = (settings.seed * 1_000_003 + si + 7919 * (ni + 1)) % (2**31)
            t1, c1 = time.time(), time.process_time()
            trained = train_one(spec, site, acts, act_mean, scale, settings, n_ctx, sae_seed)
            train_wall, train_cpu = time.time() - t1, time.process_time() - c1
            out_dir = out_root / site / spec.name
            sae = ship(trained, out_dir, settings.device)
            sae.eval()
            st = recon_stats(sae, held)
            freq = st.firing_frequency().cpu()
            save_file({"firing_freq": freq.contiguous()}, str(out_dir / "firing_freq.safetensors"))
            ce_rec = ce_with_splice(model, ce_rows, site, _sae_fn(sae))
            steps = settings.train_tokens // settings.batch_size
            card = {
                "site": site,
                "name": spec.name,
                "path": f"{site}/{spec.name}",
                "architecture": spec.architecture,
                "loss": spec.loss,
                "loss_notes": (
                    ARCH_NOTES["gated-paper"] if spec.loss == "paper"
                    else "sae_lens's training loss for this architecture"
                ),
                "k": spec.k,
                "l1_coefficient": spec.l1_coefficient,
                "d_in": int(sae.cfg.d_in),
                "d_sae": int(sae.cfg.d_sae),
                "training_tokens": steps * settings.batch_size,
                "training_steps": steps,
                "train_buffer_activations": int(acts.shape[0]),
                "batch_size": settings.batch_size,
                "lr": settings.lr,
                "l0": st.l0(),
                "fvu": st.fvu(),
                "gamma": st.gamma(),
                "dead_fraction": dead_fraction(freq),
                "ce_clean": ce_clean,
                "ce_zero_ablation": ce_zero,
                "ce_reconstruction": ce_rec,
                "ce_loss_recovered": ce_loss_recovered(ce_clean, ce_rec, ce_zero),
                "ce_loss_recovered_formula": CE_FORMULA,
                "eval_tokens": int(held.shape[0]),
                "ce_tokens": int(ce_rows.shape[0] * (n_ctx - 2)),
                "position_0_excluded": True,
                "input_scale_folded": scale,
                "seed": settings.seed,
                "sae_init_seed": sae_seed,
                "command": command,
                "data": data_desc,
                "model_sha256": model_sha,
                "architecture_notes": ARCH_NOTES[spec.kind],
                "weights_dtype_on_disk": "float16",
                "train_wall_s": round(train_wall, 1),
                "train_cpu_s": round(train_cpu, 1),
                "threads": settings.threads,
                "sae_lens_version": sae_lens.__version__,
                "torch_version": torch.__version__,
                "python": platform.python_version(),
            }
            (out_dir / "card.json").write_text(json.dumps(card, indent=1) + "\n")
            for f in out_dir.iterdir():
                f.chmod(0o644)
            cards.append(card)
            print(
                f"[train_saes] {site} {spec.name}: L0 {card['l0']:.1f} FVU {card['fvu']:.3f} "
                f"CErec {card['ce_loss_recovered']:.3f} gamma {card['gamma']:.3f} dead {card['dead_fraction']:.3f} "
                f"({train_wall:.0f}s wall, {train_cpu:.0f}s cpu)",
                flush=True,
            )
    write_cards(out_root, family)
    print(
        f"[train_saes] done in {time.time() - t_start:.0f}s wall, {time.process_time() - c_start:.0f}s CPU",
        flush=True,
    )
    return cards


def parse_spec(text: str) -> SaeSpec:
    name, arch, value = text.split(":")
    if arch == "topk":
        return SaeSpec(name, arch, k=int(value))
    if arch in ("standard", "gated"):
        return SaeSpec(name, arch, l1_coefficient=float(value))
    if arch == "gated-paper":
        return SaeSpec(name, "gated", l1_coefficient=float(value), loss="paper")
    raise ValueError(f"unknown architecture {arch!r} in --spec {text!r}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = TrainSettings()
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--train-tokens", type=int, default=d.train_tokens)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--eval-rows", type=int, default=d.eval_rows)
    p.add_argument("--ce-rows", type=int, default=d.ce_rows)
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--out", type=Path, default=None, help=f"output root (default {ASSETS_DIR})")
    p.add_argument("--sites", nargs="+", default=list(SITES))
    p.add_argument("--only", nargs="+", default=None, help="train only these names (no index/CARDS)")
    p.add_argument(
        "--act-cache",
        type=Path,
        default=None,
        help="directory to keep the activation buffers in, keyed by a hash of weights and tokens "
        "(reruns, e.g. with --only, then skip the model forward passes; results are identical)",
    )
    p.add_argument(
        "--cards-only",
        action="store_true",
        help="only rewrite index.json and CARDS.md from the card.json files under --out",
    )
    p.add_argument("--smoke", action="store_true", help="random model + synthetic tokens, tiny sizes")
    p.add_argument(
        "--spec",
        action="append",
        default=None,
        metavar="NAME:ARCH:VALUE",
        help="replace the family by these SAEs (repeatable; ARCH is standard, topk, gated (sae_lens's "
        "loss) or gated-paper (the paper's loss); VALUE is the L1 coefficient for standard/gated/"
        "gated-paper, k for topk), e.g. --spec l1-a:standard:3 --spec t8:topk:8 --spec gp:gated-paper:4",
    )
    a = p.parse_args(argv)
    settings = TrainSettings(
        seed=a.seed,
        train_tokens=a.train_tokens,
        batch_size=a.batch_size,
        lr=a.lr,
        eval_rows=a.eval_rows,
        ce_rows=a.ce_rows,
        threads=a.threads,
    )
    out = a.out
    if out is None:
        if a.smoke:
            out = Path(tempfile.mkdtemp(prefix="sensdir_sae_smoke_"))
        else:
            out = ASSETS_DIR
    out.mkdir(parents=True, exist_ok=True)
    command = "python -m sensdir.embedded.train_saes" + (
        " " + " ".join(shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:]))
        if (argv if argv is not None else sys.argv[1:])
        else ""
    )
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if a.cards_only:
        write_cards(out)
        return 0
    family = None
    if a.spec:
        specs = tuple(parse_spec(x) for x in a.spec)
        family = {site: specs for site in a.sites}
    run(
        settings, out, sites=a.sites, names=a.only, smoke=a.smoke, command=command, family=family,
        act_cache=a.act_cache,
    )
    print(f"[train_saes] wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
