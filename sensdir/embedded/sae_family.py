"""What the embedded SAE family is: its sites, its SAEs (architecture, L1 coefficient or k,
loss) and the training settings, METHODS §8. The table that ``train_saes`` trains and the cards
describe; its order fixes each SAE's seed.
"""

from __future__ import annotations

import dataclasses
import zlib
from pathlib import Path

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
    train_tokens: int = 1_200_000  # activations per SAE (~0.6 of the 1.93M-activation training-mixture buffer)
    batch_size: int = 1024
    lr: float = 3e-3
    eval_rows: int = 1024  # held-out rows for FVU / gamma / L0 / firing frequency
    ce_rows: int = 256  # held-out rows for the CE-loss splice
    threads: int = 2
    device: str = "cpu"


def site_key(site: str) -> int:
    """A stable per-site integer (so a site's data and seeds do not depend on which other
    sites are trained in the same invocation)."""
    return zlib.crc32(site.encode()) % 1_000_000


def parse_spec(text: str) -> SaeSpec:
    name, arch, value = text.split(":")
    if arch == "topk":
        return SaeSpec(name, arch, k=int(value))
    if arch in ("standard", "gated"):
        return SaeSpec(name, arch, l1_coefficient=float(value))
    if arch == "gated-paper":
        return SaeSpec(name, "gated", l1_coefficient=float(value), loss="paper")
    raise ValueError(f"unknown architecture {arch!r} in --spec {text!r}")
