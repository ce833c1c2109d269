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
    The model's own training mixture (issue 12; :mod:`sensdir.embedded.sae_mixture`): rows of
    ``n_ctx`` = 128 tokens in the proportions the model was trained with (``ROWS_MIX`` of
    :mod:`sensdir.embedded.train`: 69% prose, 15.5% IOI sentences, 15.5% first-letter
    statements). Prose: the corpus split (``sensdir.embedded.corpus``) tokenized with the
    model's tokenizer, every document preceded by the end-of-text token (id 0), cut into
    consecutive windows (windows start anywhere, as the model's prose windows do; no BOS is
    prepended). IOI / first letter: windows that start at a sentence boundary (the end-of-text
    token before a sentence) and run on over the following sentences, drawn with the seed among
    the sentence starts of the model's own task streams (rebuilt from the generators and data
    seed of ``sensdir.embedded.data.prepare``: ``tasks.ioi_train_texts``, the seen
    first-letter words' statements reshuffled 32 times). Training uses every window of the
    corpus train split (10,481) plus 2,354 IOI and 2,354 first-letter windows; evaluation uses
    the corpus ``heldout`` split and, in the same proportions, windows of IOI sentences of the
    held-out templates (held-out name pairs) and of the held-out first-letter words' statements.
    The model runs only up to the deepest site (``stop_at_layer``). Position 0 of every window
    is excluded: whatever its token, the first position attends only to itself and its
    residual is an outlier (attention-sink-like), not typical text. Train rows are shuffled
    with the seed; the activations are generated once per site, shuffled again with the seed,
    and the whole family reads the same buffer (one pass). Inputs are scaled to mean norm
    sqrt(d_in) during training (sae_lens's ``expected_average_only_in``; the factor is folded
    into the weights at the end), and ``b_dec`` starts at the (scaled) activation mean.

    Every card also reports the SAE's error on the IOI END activations (the last prompt token,
    where the IO name is predicted) of the model's 1000 held-out-template IOI evaluation
    prompts, taken as the IOI study takes them: ``ioi_end_rel_sq_error`` = sum ||x - x_hat||^2
    / sum ||x||^2 and ``ioi_end_fvu`` (the same error over sum ||x - mean(x)||^2, the IOI
    study's ``fvu`` column); and the held-out FVU per source (``fvu_by_source``).

Outputs (under ``sensdir/embedded/assets/saes`` unless ``--out``)
    ``<site>/<name>/``  ``cfg.json`` + ``sae_weights.safetensors`` (sae_lens ``save_model``;
    weights stored as float16, ``cfg.dtype`` is float32 so ``SAE.load_from_disk(path)``
    returns a float32 SAE), ``firing_freq.safetensors`` (held-out firing frequency per
    latent), ``card.json``; plus ``index.json`` and ``CARDS.md`` for the whole family.

Everything is deterministic given ``--seed`` (CPU, fixed thread count).

This module is the command line and the run; the family table is in
:mod:`sensdir.embedded.sae_family`, the rows in :mod:`sensdir.embedded.sae_mixture`, the tokens
and activations in :mod:`sensdir.embedded.sae_data`, training and evaluation of one SAE in
:mod:`sensdir.embedded.sae_training`, and the cards in :mod:`sensdir.embedded.sae_cards`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Idle OpenMP workers sleep instead of spinning: on a small shared CPU, spinning workers made
# every small op ~100x slower with 2 threads. Only effective if torch is not imported yet.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from sensdir.embedded.sae_cards import ARCH_NOTES, CE_FORMULA, DATA_DESC, IOI_END_DEFINITION, write_cards  # noqa: E402
from sensdir.embedded.sae_data import (  # noqa: E402
    acts_key,
    collect_activations,
    load_model,
    random_model,
    synthetic_rows,
)
from sensdir.embedded.sae_family import ASSETS_DIR, FAMILY, SITES, SaeSpec, TrainSettings, parse_spec, site_key  # noqa: E402
from sensdir.embedded.sae_mixture import end_errors, ioi_end_activations, mixture_rows  # noqa: E402
from sensdir.embedded.sae_training import ce_with_splice, recon_stats, sae_fn, ship, train_one  # noqa: E402
from sensdir.sae_metrics import ce_loss_recovered, dead_fraction  # noqa: E402


def _model_sha256() -> str:
    p = ASSETS_DIR.parent / "model" / "model.safetensors"
    return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "unknown"


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


def _run(settings, out_root, sites, names, smoke, command, family, act_cache=None) -> list[dict[str, Any]]:
    import sae_lens
    from safetensors.torch import save_file

    torch.manual_seed(settings.seed)
    t_start, c_start = time.time(), time.process_time()

    end_acts: dict[str, torch.Tensor] = {}
    if smoke:
        model = random_model(settings.seed)
        n_ctx = model.cfg.n_ctx
        n_train_rows = math.ceil(settings.train_tokens / (n_ctx - 1))
        train_rows = synthetic_rows(model, n_train_rows, settings.seed)
        held_rows = synthetic_rows(model, settings.eval_rows, settings.seed + 1)
        rows_by_source = {"train": {"synthetic": int(train_rows.shape[0])}, "heldout": {"synthetic": int(held_rows.shape[0])}}
        held_source = torch.zeros(held_rows.shape[0], dtype=torch.long)
        data_desc = "synthetic uniform tokens, random model"
    else:
        model = load_model()
        n_ctx = model.cfg.n_ctx
        # every train prose window and the task windows that go with them (shuffled), whatever
        # train_tokens is: the buffer, and so the activation cache, does not depend on how long
        # the SAEs train
        train_mix = mixture_rows(model, "train", n_ctx, seed=settings.seed)
        held_mix = mixture_rows(model, "heldout", n_ctx, max_rows=settings.eval_rows)
        train_rows, held_rows, held_source = train_mix.rows, held_mix.rows, held_mix.source
        rows_by_source = {"train": train_mix.counts(), "heldout": held_mix.counts()}  # keys in SOURCES order
        end_acts = ioi_end_activations(model, sites)
        data_desc = DATA_DESC
    model_sha = "random-init" if smoke else _model_sha256()
    model.to(settings.device)
    model.eval()
    if train_rows.shape[0] * (n_ctx - 1) < settings.train_tokens:
        print(
            f"[train_saes] only {train_rows.shape[0] * (n_ctx - 1):,} train activations; the SAEs will see some more than once",
            flush=True,
        )
    print(
        f"[train_saes] rows: train {tuple(train_rows.shape)}, held-out {tuple(held_rows.shape)}, by source {rows_by_source}",
        flush=True,
    )
    # held-out activation -> source of its row (position 0 of every row is not collected)
    held_act_source = held_source.repeat_interleave(n_ctx - 1).to(settings.device)

    t0 = time.time()
    # with a cache, collect every standard site so that runs on a subset reuse the buffers
    collect_sites = sorted(set(sites) | (set(SITES) if act_cache is not None else set()))
    cache_file = None
    if act_cache is not None:
        cache_file = Path(act_cache) / f"acts-{acts_key(model, train_rows, held_rows, collect_sites)}.pt"
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
        si = site_key(site)
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
            fvu_by_source = {
                src: recon_stats(sae, held[held_act_source == i]).fvu()
                for i, src in enumerate(rows_by_source["heldout"])
                if bool((held_act_source == i).any())
            }
            end = end_errors(sae, end_acts[site].to(settings.device)) if site in end_acts else None
            freq = st.firing_frequency().cpu()
            save_file({"firing_freq": freq.contiguous()}, str(out_dir / "firing_freq.safetensors"))
            ce_rec = ce_with_splice(model, ce_rows, site, sae_fn(sae))
            steps = settings.train_tokens // settings.batch_size
            card = {
                "site": site,
                "name": spec.name,
                "path": f"{site}/{spec.name}",
                "architecture": spec.architecture,
                "loss": spec.loss,
                "loss_notes": (
                    ARCH_NOTES["gated-paper"] if spec.loss == "paper" else "sae_lens's training loss for this architecture"
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
                "fvu_by_source": fvu_by_source,
                "ioi_end_rel_sq_error": end["rel_sq_error"] if end else None,
                "ioi_end_fvu": end["fvu"] if end else None,
                "ioi_end_prompts": int(end_acts[site].shape[0]) if end else 0,
                "ioi_end_definition": IOI_END_DEFINITION,
                "gamma": st.gamma(),
                "dead_fraction": dead_fraction(freq),
                "ce_clean": ce_clean,
                "ce_zero_ablation": ce_zero,
                "ce_reconstruction": ce_rec,
                "ce_loss_recovered": ce_loss_recovered(ce_clean, ce_rec, ce_zero),
                "ce_loss_recovered_formula": CE_FORMULA,
                "eval_tokens": int(held.shape[0]),
                "rows_by_source": rows_by_source,
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
                f"FVU by source {' '.join(f'{k} {v:.3f}' for k, v in fvu_by_source.items())} "
                f"IOI END rel {card['ioi_end_rel_sq_error'] if end is None else round(end['rel_sq_error'], 3)} "
                f"({train_wall:.0f}s wall, {train_cpu:.0f}s cpu)",
                flush=True,
            )
    write_cards(out_root, family)
    print(
        f"[train_saes] done in {time.time() - t_start:.0f}s wall, {time.process_time() - c_start:.0f}s CPU",
        flush=True,
    )
    return cards


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
        settings,
        out,
        sites=a.sites,
        names=a.only,
        smoke=a.smoke,
        command=command,
        family=family,
        act_cache=a.act_cache,
    )
    print(f"[train_saes] wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
