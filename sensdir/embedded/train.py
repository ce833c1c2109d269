"""Train the embedded default model: ``python -m sensdir.embedded.train``.

Deterministic from ``--seed`` on a given device type (CUDA runs use deterministic kernels and
``CUBLAS_WORKSPACE_CONFIG``).  Needs only torch and numpy once the data directory exists (see
:mod:`sensdir.embedded.data`); building it additionally needs ``tokenizers`` and ``transformers``
and reads the local Python standard library.

Each batch holds ``--batch-size`` rows of ``n_ctx + 1`` tokens: about 69% random windows of the
training prose, 16% windows of IOI sentences and 16% of first-letter statements (task windows
start at a sentence boundary, i.e. with the end-of-text token, and run on over the following
sentences).  Next-token cross-entropy on every position, AdamW, linear warm-up then cosine decay,
bf16 autocast on CUDA.  At the end the model is evaluated (:mod:`sensdir.embedded.metrics`) and
``model.safetensors`` (HookedTransformer state dict, float16), ``config.json``
(HookedTransformerConfig kwargs), ``metrics.json`` and ``tokenizer/`` are written to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
SHIPPED_TOKENIZER = HERE / "assets" / "model" / "tokenizer"
ROWS_MIX = (0.69, 0.155, 0.155)  # prose, IOI, first letter


def default_data_dir() -> Path:
    from .corpus import cache_dir, python_tag

    return cache_dir() / f"embedded-data-{python_tag()}"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="Train the sensdir embedded model.")
    ap.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="prepared data (built here if it has no manifest.json); default ~/.cache/sensdir/embedded-data-<python>",
    )
    ap.add_argument(
        "--tokenizer",
        type=Path,
        default=None,
        help="tokenizer directory to use when building the data (default: the shipped one if present, else train a new one)",
    )
    ap.add_argument("--new-tokenizer", action="store_true", help="train a new tokenizer")
    ap.add_argument("--out", type=Path, default=Path("outputs/embedded_model"))
    ap.add_argument("--tokens", type=float, default=80e6, help="training tokens (input positions)")
    ap.add_argument("--batch-size", type=int, default=128, help="rows per step")
    ap.add_argument("--n-ctx", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=300, help="warm-up steps")
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--amp", choices=["auto", "bf16", "none"], default="auto", help="autocast: auto = bf16 on CUDA, none on CPU")
    ap.add_argument("--eval-every", type=int, default=250, help="steps between progress evaluations (0: none)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    return ap.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    import torch
    import torch.nn.functional as F

    from .gpt import GPT, GPTConfig
    from .metrics import evaluate_all

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(
        "cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device)
    )
    amp = args.amp if args.amp != "auto" else ("bf16" if device.type == "cuda" else "none")
    if device.type == "cuda":
        # warn_only: an op without a deterministic kernel warns instead of aborting a long run.
        # (CPU kernels are deterministic for a fixed thread count without this switch.)
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    data_dir = args.data_dir or default_data_dir()
    if not (data_dir / "manifest.json").exists():
        from .data import prepare

        tok_dir = None if args.new_tokenizer else (args.tokenizer or (SHIPPED_TOKENIZER if SHIPPED_TOKENIZER.exists() else None))
        print(f"preparing data in {data_dir} (tokenizer: {tok_dir or 'new'})", flush=True)
        prepare(data_dir, tok_dir, seed=0)
    manifest = json.loads((data_dir / "manifest.json").read_text())
    eval_json = json.loads((data_dir / "eval.json").read_text())

    def load_stream(name: str) -> torch.Tensor:
        return torch.from_numpy(np.load(data_dir / f"{name}.npy").astype(np.int64)).to(device)

    prose = load_stream("prose_train")
    ioi = load_stream("ioi_train")
    fl = load_stream("first_letter_train")
    prose_heldout = np.load(data_dir / "prose_heldout.npy")
    T = args.n_ctx
    ar = torch.arange(T + 1, device=device)

    def sentence_starts(stream: torch.Tensor) -> torch.Tensor:
        s = (stream == 0).nonzero()[:, 0]
        return s[s + T + 1 <= len(stream)]

    ioi_starts, fl_starts = sentence_starts(ioi), sentence_starts(fl)
    B = args.batch_size
    n_ioi = round(B * ROWS_MIX[1])
    n_fl = round(B * ROWS_MIX[2])
    n_prose = B - n_ioi - n_fl
    steps = int(math.ceil(args.tokens / (B * T)))

    gen = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    cfg = GPTConfig(n_ctx=T, d_vocab=int(manifest["vocab_size"]), dropout=args.dropout)
    model = GPT(cfg)
    model.init_weights(torch.Generator().manual_seed(args.seed))
    model.to(device)
    decay = [p for n, p in model.named_parameters() if n.split(".")[-1].startswith("W_")]
    no_decay = [p for n, p in model.named_parameters() if not n.split(".")[-1].startswith("W_")]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.95),
        eps=1e-8,
        fused=device.type == "cuda",
    )

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        frac = (step - args.warmup) / max(1, steps - args.warmup)
        return args.lr * (args.min_lr_frac + (1 - args.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * frac)))

    def batch() -> torch.Tensor:
        p0 = torch.randint(0, len(prose) - T - 1, (n_prose,), generator=gen).to(device)
        i0 = ioi_starts[torch.randint(0, len(ioi_starts), (n_ioi,), generator=gen).to(device)]
        f0 = fl_starts[torch.randint(0, len(fl_starts), (n_fl,), generator=gen).to(device)]
        return torch.cat([prose[p0[:, None] + ar], ioi[i0[:, None] + ar], fl[f0[:, None] + ar]])

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp == "bf16")

    def logits_fn(tokens: torch.Tensor) -> torch.Tensor:
        with autocast():
            return model(tokens).float()

    def run_eval(full: bool) -> dict:
        model.eval()
        tasks = None if full else ("ioi_heldout_pairs", "ioi_heldout_templates", "first_letter_seen", "first_letter_unseen")
        kw: dict[str, Any] = {} if full else {"tasks": tasks}
        r = evaluate_all(logits_fn, eval_json, prose_heldout, T, device, **kw)
        model.train()
        return r

    print(
        f"device={device} amp={amp} params={model.num_params():,} steps={steps} "
        f"batch={B}x{T} (prose {n_prose}, ioi {n_ioi}, first-letter {n_fl})",
        flush=True,
    )
    log: list[dict] = []
    model.train()
    t0 = time.time()
    loss_acc, loss_n = torch.zeros((), device=device), 0
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        x = batch()
        with autocast():
            logits = model(x[:, :-1])
        loss = F.cross_entropy(logits.float().reshape(-1, cfg.d_vocab), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        loss_acc += loss.detach()
        loss_n += 1
        last = step == steps - 1
        if (args.eval_every and (step + 1) % args.eval_every == 0) or last:
            entry = {
                "step": step + 1,
                "tokens": (step + 1) * B * T,
                "train_loss": float(loss_acc) / loss_n,
                "lr": lr_at(step),
                "elapsed_s": round(time.time() - t0, 1),
            }
            loss_acc.zero_()
            loss_n = 0
            if not last:
                r = run_eval(full=False)
                entry.update(
                    {
                        "heldout_bits_per_char": r["prose_heldout"]["bits_per_char"],
                        **{k: v["accuracy"] for k, v in r.items() if k != "prose_heldout"},
                    }
                )
            log.append(entry)
            print(json.dumps(entry), flush=True)
    train_s = time.time() - t0
    final = run_eval(full=True)
    print(json.dumps(final, indent=1), flush=True)

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    sd = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(cfg.hooked_kwargs(), indent=2) + "\n")
    hw = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    metrics = {
        "eval_dtype": "float32 weights from training, autocast " + amp,
        "metrics": final,
        "training": {
            "seed": args.seed,
            "device": str(device),
            "hardware": hw,
            "amp": amp,
            "torch": torch.__version__,
            "python": sys.version.split()[0],
            "steps": steps,
            "batch_rows": B,
            "n_ctx": T,
            "tokens_seen": steps * B * T,
            "rows_per_batch": {"prose": n_prose, "ioi": n_ioi, "first_letter": n_fl},
            "lr": args.lr,
            "min_lr_frac": args.min_lr_frac,
            "warmup": args.warmup,
            "weight_decay": args.weight_decay,
            "dropout": args.dropout,
            "grad_clip": args.grad_clip,
            "train_seconds": round(train_s, 1),
            "parameters": model.num_params(),
            "argv": sys.argv[1:] if argv is None else list(argv),
        },
        "data": manifest,
        "curve": log,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    tok_src = data_dir / "tokenizer"
    if tok_src.exists() and tok_src.resolve() != (out / "tokenizer").resolve():
        shutil.rmtree(out / "tokenizer", ignore_errors=True)
        shutil.copytree(tok_src, out / "tokenizer")
    print(f"wrote {out} in {time.time() - t0:.1f}s", flush=True)
    return metrics


if __name__ == "__main__":
    main()
