"""The engine-against-naive cases of ``make bench`` (the whole benchmark: ``sensdir.bench``)."""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass

import torch

from sensdir.engine import WalkEngine, clean_site_resid
from sensdir.engine.reference import naive_readouts
from sensdir.metrics.kl import KL, kl_from_logits
from sensdir.metrics.l2 import L2
from sensdir.site import Site

GPT2_SHAPE = dict(
    n_layers=12,
    d_model=768,
    n_heads=12,
    d_head=64,
    d_mlp=3072,
    d_vocab=50257,
    n_ctx=1024,
    act_fn="gelu_new",
    normalization_type="LN",
)
SITE = "blocks.1.hook_resid_pre"
N_STEPS = 100


class PeakMemory:
    """Peak memory above the starting point: CUDA's allocator statistics on a GPU, a
    sampled resident-set size on the CPU."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            import psutil

            self.proc = psutil.Process()
            self.base = self.peak = self.proc.memory_info().rss
            self.stop = threading.Event()
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self):
        while not self.stop.wait(0.002):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.mb = (torch.cuda.max_memory_allocated() - self.base) / 2**20
        else:
            self.stop.set()
            self.thread.join()
            self.peak = max(self.peak, self.proc.memory_info().rss)
            self.mb = (self.peak - self.base) / 2**20


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_gflops(device: torch.device, dtype: torch.dtype, n: int = 2048, reps: int = 10) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    _sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e9


def step_flops(cfg, T: int, start_layer: int, engine: bool) -> float:
    """Multiply-adds x 2 of one perturbation step. The engine recomputes one position from
    the site on and unembeds it, plus its share of the clean prefix (T-1 positions from the
    site on, once per walk of N_STEPS steps); the naive path recomputes all T positions
    through every layer and unembeds all of them."""
    d, m, V = cfg.d_model, cfg.d_mlp, cfg.d_vocab
    per_pos_layer = 2 * (4 * d * d + 2 * d * m)
    attn = lambda q: 2 * 2 * q * T * d  # noqa: E731  scores and mixing for q query positions
    if engine:
        prefix = (cfg.n_layers - start_layer) * ((T - 1) * per_pos_layer + attn(T - 1)) / N_STEPS
        return (cfg.n_layers - start_layer) * (per_pos_layer + attn(1)) + 2 * d * V + prefix
    return cfg.n_layers * (T * per_pos_layer + attn(T)) + T * 2 * d * V


def gpt2_shaped_model(device, dtype, seed=0):
    from sensdir.model_backend import build_model, model_config

    torch.manual_seed(seed)
    model = build_model(model_config(**GPT2_SHAPE, seed=seed))
    model.to(dtype)
    if device.type != "cpu":
        model.to(device)
    return model.eval()


def embedded_model(device, dtype):
    from sensdir.loading import embedded_model_dir, load_model_dir

    return load_model_dir(embedded_model_dir(), device, dtype)


@dataclass
class Case:
    model: str
    n_ctx: int
    engine_prompts: int
    naive_prompts: int


def _walks(model, tokens_BT, site, gen):
    clean_BTD = clean_site_resid(model, tokens_BT, site)
    base_BD = clean_BTD[:, -1].float()
    target_BD = torch.randn(base_BD.shape, generator=gen).to(base_BD.device)
    target_BD = target_BD * (base_BD.norm(dim=-1, keepdim=True) / target_BD.norm(dim=-1, keepdim=True))
    t_K = torch.linspace(0, 1, N_STEPS, device=base_BD.device)[None, :, None]
    acts_BKD = ((1 - t_K) * base_BD[:, None] + t_K * target_BD[:, None]).to(clean_BTD.dtype)
    return clean_BTD, acts_BKD


def _rel_diff(a, b):
    return float(((a - b).abs().max(dim=-1).values / b.abs().max(dim=-1).values.clamp_min(1e-12)).max())


def run_case(model, case: Case, device, batch_size: int, gen, compile: bool = True, repeats: int = 3) -> dict:
    site = Site.parse(SITE, model.cfg.n_layers)
    B = max(case.engine_prompts, case.naive_prompts)
    tokens_BT = torch.randint(0, model.cfg.d_vocab, (B, case.n_ctx), generator=gen).to(device)
    clean_BTD, acts_BKD = _walks(model, tokens_BT, site, gen)

    # One engine, as in a job: a warm-up pass (workspace buffers, compiled kernel, allocator),
    # then timed passes over the same walks. Peak memory covers the warm-up (the workspace).
    clean_e, acts_e = clean_BTD[: case.engine_prompts], acts_BKD[: case.engine_prompts]
    n = case.naive_prompts

    def engine_pass():
        _sync(device)
        t = time.perf_counter()
        out = engine.curves(clean_e, acts_e)
        _sync(device)
        return time.perf_counter() - t, out

    def naive_pass():
        kl_n, l2_n = [], []
        t = time.perf_counter()
        for b in range(n):
            logits_KV, final_KD = naive_readouts(model, tokens_BT[b], acts_BKD[b], site)
            kl_n.append(kl_from_logits(logits_KV[:1].expand_as(logits_KV), logits_KV))
            l2_n.append((final_KD.float() - final_KD[:1].float()).norm(dim=-1))
        _sync(device)
        return time.perf_counter() - t, (torch.stack(kl_n), torch.stack(l2_n))

    with PeakMemory(device) as mem_e:
        engine = WalkEngine(model, site, [KL(), L2()], batch_size=batch_size, compile=compile)
        engine.curves(clean_e, acts_e)
        t_e, eng = engine_pass()
    naive_readouts(model, tokens_BT[0], acts_BKD[0, :2], site)
    with PeakMemory(device) as mem_n:
        t_n, (kl_n, l2_n) = naive_pass()
    # Alternating repeats, medians reported: this machine's speed drifts by several percent
    # over a minute, and both paths should see the same drift.
    t_engine_runs, t_naive_runs = [t_e], [t_n]
    for _ in range(repeats - 1):
        t_engine_runs.append(engine_pass()[0])
        t_naive_runs.append(naive_pass()[0])
    diffs = (_rel_diff(eng["kl"][:n], kl_n), _rel_diff(eng["l2"][:n], l2_n))
    return _case_result(model, case, device, site, (t_engine_runs, t_naive_runs), diffs, (mem_e.mb, mem_n.mb))


def _case_result(model, case: Case, device, site, runs, diffs, mems) -> dict:
    eng_steps = case.engine_prompts * N_STEPS / statistics.median(runs[0])
    naive_steps = case.naive_prompts * N_STEPS / statistics.median(runs[1])
    return {
        "model": case.model,
        "n_ctx": case.n_ctx,
        "device": str(device),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "naive_steps_per_s": naive_steps,
        "engine_steps_per_s": eng_steps,
        "speedup": eng_steps / naive_steps,
        "max_rel_diff_kl": diffs[0],
        "max_rel_diff_l2": diffs[1],
        "peak_mem_mb": mems[0],
        "naive_peak_mem_mb": mems[1],
        "engine_gflops": eng_steps * step_flops(model.cfg, case.n_ctx, site.start_layer, True) / 1e9,
        "naive_gflops": naive_steps * step_flops(model.cfg, case.n_ctx, site.start_layer, False) / 1e9,
        "engine_prompts": case.engine_prompts,
        "naive_prompts": case.naive_prompts,
        "engine_s_runs": runs[0],
        "naive_s_runs": runs[1],
    }
