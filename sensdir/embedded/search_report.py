"""The model search's table and figure for the model card.

    python -m sensdir.embedded.search_report RUNS_DIR [--card sensdir/embedded/assets/model/MODEL_CARD.md]

Reads ``RUNS_DIR/search.jsonl`` (written by :mod:`sensdir.embedded.search`), measures the shipped
model with the same probe, and writes beside the card ``search/search.jsonl`` (the rows),
``search/plateau_search.png`` (plateau index and L2 curvature against tokens seen) and the table
between the card's ``<!-- search:begin -->`` and ``<!-- search:end -->`` markers.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

BEGIN, END = "<!-- search:begin -->", "<!-- search:end -->"
TARGET_INDEX, TARGET_CURVATURE = 0.5, 0.8  # issue 12's bar for "shows plateaus"
FAR = 1.25  # random/real target distance above which the index reflects the distance (docs/methods.md §10)


def shipped_row(model_dir: Path, data_dir: Path, n_ctx: int) -> dict:
    """The shipped model measured as the search measures its runs (held-out loss on the same
    streams in ``n_ctx``-token windows, the probe at the same site)."""
    import numpy as np
    from transformers import AutoTokenizer

    from .plateau_probe import embedded_prompts, load_gpt, plateau_probe
    from .search import PROBE_LAYER, heldout_loss

    metrics = json.loads((model_dir / "metrics.json").read_text())
    cfg = json.loads((model_dir / "config.json").read_text())
    model = load_gpt(model_dir)
    prompts = embedded_prompts(AutoTokenizer.from_pretrained(str(model_dir / "tokenizer")), n_base=700)
    return {
        "name": "shipped (assets/model)",
        "n_layers": cfg["n_layers"],
        "d_model": cfg["d_model"],
        "mlp_ratio": cfg["d_mlp"] // cfg["d_model"],
        "data": "stdlib",
        "tokens": metrics["training"]["tokens_seen"],
        "parameters": model.num_params(),
        **{f"heldout_{k}": heldout_loss(model, np.load(data_dir / f"{k}_heldout.npy"), n_ctx) for k in ("prose", "debian")},
        **plateau_probe(model, prompts, PROBE_LAYER, seed=0),
    }


def table(rows: list[dict]) -> str:
    head = (
        "| configuration | layers | d_model | d_mlp | data | parameters | tokens | held-out nats/token (stdlib / Debian) "
        "| plateau index t=0.1 / 0.2 / 0.3 | L2 curvature | random/real distance |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        deb = r.get("heldout_debian")
        lines.append(
            f"| {r['name']} | {r['n_layers']} | {r['d_model']} | {r['mlp_ratio'] * r['d_model']} | {r['data']} "
            f"| {r['parameters'] / 1e6:.2f} M | {r['tokens'] / 1e6:.2f} M "
            f"| {r['heldout_prose']:.2f} / {'-' if deb is None else f'{deb:.2f}'} "
            f"| {r['plateau_index_t0.1']:.2f} / {r['plateau_index_t0.2']:.2f} / {r['plateau_index_t0.3']:.2f} "
            f"| {r['l2_curvature']:.3f} | {r['random_to_real_distance']:.2f} |"
        )
    return "\n".join(lines)


def figure(rows: list[dict], shipped: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    names = sorted({r["name"] for r in rows})
    for ax, key, target, label in (
        (axes[0], "plateau_index_t0.2", TARGET_INDEX, "plateau index at t = 0.2 (median KL_real / KL_random)"),
        (axes[1], "l2_curvature", TARGET_CURVATURE, "L2 curvature (median l2[20] / 2 l2[10])"),
    ):
        for name in names:
            rs = sorted((r for r in rows if r["name"] == name), key=lambda r: r["tokens"])
            (line,) = ax.plot([r["tokens"] for r in rs], [r[key] for r in rs], marker="o", label=name)
            far = [r for r in rs if r["random_to_real_distance"] > FAR]
            ax.plot([r["tokens"] for r in far], [r[key] for r in far], marker="o", ls="", mfc="white", color=line.get_color())
        ax.plot([shipped["tokens"]], [shipped[key]], marker="*", markersize=14, color="k", linestyle="", label=shipped["name"])
        ax.axhline(1.0, color="grey", lw=0.8, ls=":")
        ax.axhline(target, color="tab:red", lw=1, ls="--", label=f"issue 12 bar ({target})")
        ax.set_xscale("log")
        ax.set_xlabel("tokens seen")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=7)
    fig.suptitle(
        f"Model search at blocks.1.hook_resid_pre. Open markers: random targets > {FAR}x farther than real ones "
        "(cov_eps dominates the residual's variance), not a plateau",
        fontsize=9,
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)


def replace_section(card: Path, body: str) -> None:
    text = card.read_text()
    if BEGIN not in text:
        text = text.rstrip("\n") + f"\n\n{BEGIN}\n{END}\n"
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    card.write_text(text[:start] + "\n" + body.strip("\n") + "\n" + text[end:])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", type=Path)
    ap.add_argument("--data-dir", type=Path, default=None, help="the search's data directory (default: as the search)")
    ap.add_argument("--card", type=Path, default=Path(__file__).parent / "assets" / "model" / "MODEL_CARD.md")
    args = ap.parse_args(argv)
    rows = [json.loads(x) for x in (args.runs / "search.jsonl").read_text().splitlines() if x.strip()]
    rows.sort(key=lambda r: (r["name"], r["tokens"]))
    from .train import default_data_dir

    shipped = shipped_row(args.card.parent, args.data_dir or default_data_dir(), rows[0]["n_ctx"])
    out = args.card.parent / "search"
    out.mkdir(exist_ok=True)
    shutil.copyfile(args.runs / "search.jsonl", out / "search.jsonl")
    (out / "shipped_probe.json").write_text(json.dumps(shipped, indent=2) + "\n")
    figure(rows, shipped, out / "plateau_search.png")
    replace_section(args.card, table(rows + [shipped]) + "\n\n![plateau search](search/plateau_search.png)")
    print(f"wrote {out} and the table in {args.card}")


if __name__ == "__main__":
    main()
