"""Model search for the embedded default: does any model we can train show activation plateaus?

``python -m sensdir.embedded.search --out DIR [--only NAME ...] [--threads N] [--device cuda]
[--token-scale K]`` trains each
configuration of :data:`PLAN` (depth, width, MLP ratio, data breadth; tokens along each run) and,
at token milestones, measures the plateau index and L2 curvature with
:mod:`sensdir.embedded.plateau_probe` plus the held-out loss. One row per (configuration,
milestone) goes to ``DIR/search.jsonl``; ``python -m sensdir.embedded.search_report DIR`` turns
it into the model card's table and figure.

Interrupted runs resume: each configuration keeps ``DIR/<name>/ckpt.pt`` (model, optimiser, step,
sampler state), written atomically at every milestone, and milestones already measured are not
measured again. A configuration's final weights are also saved in the layout sensdir loads
(``DIR/<name>/model``), so ``experiment=plateau_check model.path=DIR/<name>/model`` checks it with
the full instrument.

Data: the prepared directory of :mod:`sensdir.embedded.data` (stdlib prose, IOI and first-letter
sentences) plus, for ``data="broad"``, the Debian text of :mod:`sensdir.embedded.debian_text`
tokenized with the same tokenizer. Rows mix as in :mod:`sensdir.embedded.train` (prose / IOI /
first letter); in broad runs (choice) 30% of prose rows come from the stdlib prose, which is where
the probe's prompts come from, and 70% from the Debian text.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .gpt import GPT, GPTConfig
from .plateau_probe import embedded_prompts, plateau_probe
from .train import ROWS_MIX, SHIPPED_TOKENIZER, default_data_dir

BROAD_STDLIB_FRAC = 0.3
PROBE_LAYER = 1  # the shipped SAEs' first site, blocks.1.hook_resid_pre


@dataclass(frozen=True)
class SearchConfig:
    name: str
    n_layers: int = 4
    d_model: int = 128
    mlp_ratio: int = 4
    data: str = "broad"  # "stdlib" (stdlib prose + tasks) or "broad" (+ Debian text)
    tokens: float = 4e6
    n_ctx: int = 64
    batch_rows: int = 32
    lr: float = 2e-3
    warmup: int = 100
    seed: int = 0

    def gpt(self, d_vocab: int) -> GPTConfig:
        d_head = 32
        return GPTConfig(
            n_layers=self.n_layers,
            d_model=self.d_model,
            n_heads=self.d_model // d_head,
            d_head=d_head,
            d_mlp=self.mlp_ratio * self.d_model,
            d_vocab=d_vocab,
            n_ctx=self.n_ctx,
        )

    def milestones(self) -> list[int]:
        """Token counts at which the probe runs: 1/16, 1/8, 1/4, 1/2 and all of the run."""
        return [int(self.tokens / 2**k) for k in (4, 3, 2, 1, 0)]


# Sized for a 2-core CPU shared with other work (~1k tokens/s for d_model 128, 4 layers);
# on a GPU multiply every ``tokens`` by 100 or more.
PLAN = (
    SearchConfig("broad-L4-d128", tokens=1.5e6),
    SearchConfig("stdlib-L4-d128", data="stdlib", tokens=0.75e6),
    SearchConfig("broad-L8-d128", n_layers=8, tokens=0.75e6),
    SearchConfig("broad-L4-d256", d_model=256, tokens=0.5e6),
    SearchConfig("broad-L4-d128-mlp8", mlp_ratio=8, tokens=0.5e6),
    SearchConfig("broad-L4-d128-long", tokens=4e6),
)


class Streams:
    """Token streams in memory and the row sampler (seeded, its state checkpointed)."""

    def __init__(self, data_dir: Path, broad: bool, n_ctx: int, seed: int):
        def load(name: str) -> torch.Tensor:
            return torch.from_numpy(np.load(data_dir / f"{name}.npy").astype(np.int64))

        self.T = n_ctx
        self.prose = load("prose_train")
        self.debian = load("debian_train") if broad else None
        self.ioi, self.fl = load("ioi_train"), load("first_letter_train")
        self.ioi_starts, self.fl_starts = self._starts(self.ioi), self._starts(self.fl)
        self.gen = torch.Generator().manual_seed(seed)
        self.ar = torch.arange(n_ctx + 1)

    def _starts(self, stream: torch.Tensor) -> torch.Tensor:
        s = (stream == 0).nonzero()[:, 0]
        return s[s + self.T + 1 <= len(stream)]

    def _windows(self, stream: torch.Tensor, n: int) -> torch.Tensor:
        p0 = torch.randint(0, len(stream) - self.T - 1, (n,), generator=self.gen)
        return stream[p0[:, None] + self.ar]

    def batch(self, B: int) -> torch.Tensor:
        n_ioi, n_fl = round(B * ROWS_MIX[1]), round(B * ROWS_MIX[2])
        n_prose = B - n_ioi - n_fl
        n_std = n_prose if self.debian is None else round(n_prose * BROAD_STDLIB_FRAC)
        parts = [self._windows(self.prose, n_std)]
        if self.debian is not None:
            parts.append(self._windows(self.debian, n_prose - n_std))
        for stream, starts, n in ((self.ioi, self.ioi_starts, n_ioi), (self.fl, self.fl_starts, n_fl)):
            i0 = starts[torch.randint(0, len(starts), (n,), generator=self.gen)]
            parts.append(stream[i0[:, None] + self.ar])
        return torch.cat(parts)


def prepare_debian(data_dir: Path) -> None:
    """Tokenize the installed Debian text into ``debian_{train,heldout}.npy`` (once)."""
    if (data_dir / "debian_train.npy").exists():
        return
    from . import debian_text
    from .data import _stream, load_tokenizer

    tok = load_tokenizer(data_dir / "tokenizer")
    for split in ("train", "heldout"):
        texts = [
            d["text"] for src, ok in debian_text.available().items() if ok for d in debian_text.load(src) if d["split"] == split
        ]
        np.save(data_dir / f"debian_{split}.tmp.npy", _stream(tok, texts))
        os.replace(data_dir / f"debian_{split}.tmp.npy", data_dir / f"debian_{split}.npy")
    sources = debian_text.stats()
    (data_dir / "debian_manifest.json").write_text(json.dumps(sources, indent=2))


@torch.no_grad()
def heldout_loss(model: GPT, stream: np.ndarray, n_ctx: int, max_tokens: int = 65_536) -> float:
    """Mean next-token loss (nats) over consecutive windows of a held-out stream."""
    model.eval()
    n = min(len(stream) - 1, max_tokens) // n_ctx
    x = torch.from_numpy(stream[: n * n_ctx + 1].astype(np.int64))
    inp, tgt = x[:-1].view(n, n_ctx), x[1:].view(n, n_ctx)
    total = sum(
        F.cross_entropy(
            model(inp[i : i + 64]).reshape(-1, model.cfg.d_vocab), tgt[i : i + 64].reshape(-1), reduction="sum"
        ).item()
        for i in range(0, n, 64)
    )
    model.train()
    return total / (n * n_ctx)


class Run:
    """One configuration's training, resumable from ``<out>/<name>/ckpt.pt``."""

    def __init__(self, cfg: SearchConfig, out: Path, data_dir: Path, device: str = "cpu"):
        self.cfg, self.dir, self.data_dir, self.device = cfg, out / cfg.name, data_dir, torch.device(device)
        self.dir.mkdir(parents=True, exist_ok=True)
        vocab = int(json.loads((data_dir / "manifest.json").read_text())["vocab_size"])
        torch.manual_seed(cfg.seed)
        self.model = GPT(cfg.gpt(vocab))
        self.model.init_weights(torch.Generator().manual_seed(cfg.seed))
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.1)
        self.streams = Streams(data_dir, cfg.data == "broad", cfg.n_ctx, cfg.seed)
        self.step = 0
        self.steps = math.ceil(cfg.tokens / (cfg.batch_rows * cfg.n_ctx))
        ckpt = self.dir / "ckpt.pt"
        if ckpt.exists():
            state = torch.load(ckpt, weights_only=False)
            if state.get("config") != asdict(cfg):
                raise SystemExit(f"{ckpt} was written for another configuration of {cfg.name!r}; move it away to start over")
            self.model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["opt"])
            self.streams.gen.set_state(state["gen"])
            self.step = state["step"]
        self.model.to(self.device)
        for st in self.opt.state.values():  # a checkpoint loads onto the CPU
            st.update({k: v.to(self.device) if torch.is_tensor(v) and v.dim() else v for k, v in st.items()})

    def lr(self) -> float:
        c = self.cfg
        if self.step < c.warmup:
            return c.lr * (self.step + 1) / c.warmup
        frac = (self.step - c.warmup) / max(1, self.steps - c.warmup)
        return c.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    def tokens(self) -> int:
        return self.step * self.cfg.batch_rows * self.cfg.n_ctx

    def train_to(self, tokens: int) -> float:
        """Train until ``tokens`` have been seen; returns the mean training loss of this stretch."""
        self.model.train()
        losses = []
        while self.tokens() < tokens:
            for g in self.opt.param_groups:
                g["lr"] = self.lr()
            x = self.streams.batch(self.cfg.batch_rows).to(self.device)
            loss = F.cross_entropy(self.model(x[:, :-1]).reshape(-1, self.model.cfg.d_vocab), x[:, 1:].reshape(-1))
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.opt.step()
            self.step += 1
            losses.append(loss.item())
        return float(np.mean(losses)) if losses else float("nan")

    def checkpoint(self) -> None:
        state = {
            "model": {k: v.cpu() for k, v in self.model.state_dict().items()},
            "opt": self.opt.state_dict(),
            "gen": self.streams.gen.get_state(),
            "step": self.step,
            "config": asdict(self.cfg),
        }
        tmp = self.dir / "ckpt.pt.tmp"
        torch.save(state, tmp)
        os.replace(tmp, self.dir / "ckpt.pt")

    def save_model(self) -> Path:
        """Final weights in the layout :func:`sensdir.loading.load_model_dir` reads."""
        import shutil

        from safetensors.torch import save_file

        out = self.dir / "model"
        out.mkdir(exist_ok=True)
        sd = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in self.model.state_dict().items()}
        save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})
        (out / "config.json").write_text(json.dumps(self.model.cfg.hooked_kwargs(), indent=2) + "\n")
        shutil.copytree(self.data_dir / "tokenizer", out / "tokenizer", dirs_exist_ok=True)
        return out


def _done(rows_path: Path) -> set[tuple[str, int]]:
    if not rows_path.exists():
        return set()
    return {(r["name"], r["tokens"]) for r in map(json.loads, rows_path.read_text().splitlines()) if r}


def search_one(
    cfg: SearchConfig, out: Path, data_dir: Path, prompts, heldout: dict[str, np.ndarray], device: str = "cpu"
) -> None:
    rows_path = out / "search.jsonl"
    done = _done(rows_path)
    run = Run(cfg, out, data_dir, device)
    params = run.model.num_params()
    per_step = cfg.batch_rows * cfg.n_ctx
    for milestone in cfg.milestones():
        if math.ceil(milestone / per_step) < run.step:
            continue  # passed before an interruption (measured then: checkpoints follow milestones)
        t0 = time.time()
        train_loss = run.train_to(milestone)
        run.checkpoint()
        if (cfg.name, run.tokens()) in done:
            continue
        row = {**asdict(cfg), "tokens": run.tokens(), "parameters": params, "train_loss": train_loss}
        cpu = copy.deepcopy(run.model).cpu()  # measured on the CPU, as the shipped model is
        row.update({f"heldout_{k}": heldout_loss(cpu, v, cfg.n_ctx) for k, v in heldout.items()})
        row.update(plateau_probe(cpu, prompts, PROBE_LAYER, seed=cfg.seed))
        row["train_seconds"] = round(time.time() - t0, 1)
        with rows_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(
            json.dumps(
                {
                    k: row[k]
                    for k in ("name", "tokens", "heldout_prose", "plateau_index_t0.2", "l2_curvature", "random_to_real_distance")
                }
            ),
            flush=True,
        )
    run.save_model()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--only", nargs="*", help="names of PLAN entries to run (default: all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="where to train (cpu, cuda); probes run on the CPU")
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--token-scale", type=float, default=1.0, help="multiply every configuration's tokens (a longer search)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    data_dir = args.data_dir or default_data_dir()
    if not (data_dir / "manifest.json").exists():
        from .data import prepare

        prepare(data_dir, SHIPPED_TOKENIZER if SHIPPED_TOKENIZER.exists() else None, seed=0)
    prepare_debian(data_dir)
    from transformers import AutoTokenizer

    prompts = embedded_prompts(AutoTokenizer.from_pretrained(str(data_dir / "tokenizer")), n_base=700)
    heldout = {name: np.load(data_dir / f"{stream}_heldout.npy") for name, stream in (("prose", "prose"), ("debian", "debian"))}
    args.out.mkdir(parents=True, exist_ok=True)
    for cfg in PLAN:
        if not args.only or cfg.name in args.only:
            search_one(replace(cfg, tokens=cfg.tokens * args.token_scale), args.out, data_dir, prompts, heldout, args.device)


if __name__ == "__main__":
    main()
