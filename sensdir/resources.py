"""What a job loads from outside the package, and whether the local caches hold it.

A job on GPT-2 small loads the model's config and weights and its tokenizer (Hugging Face
hub, through transformer_lens), its SAE (sae_lens, hub) and its prompts (a dataset streamed by
``datasets``, or the rows ``sensdir-prefetch`` saved: ``sensdir.data_cache``). The embedded
model, SAEs and corpus, and the toy model, need nothing.

``collect`` lists these resources for a set of jobs, ``locate`` finds one in the local caches
without the network, and ``preflight`` (the run, before loading anything) raises one
``MissingResourceError`` naming every missing resource of the job at once, with the
``sensdir-prefetch`` command that fills the caches.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, replace
from pathlib import Path

from sensdir.config import DataConfig, ModelConfig, SaeConfig, SensdirConfig
from sensdir.errors import MissingResourceError

KINDS = ("model", "tokenizer", "sae", "dataset")  # also the order prefetch fetches them in
CONFIG_FILES = ("config.json", "generation_config.json")
WEIGHT_PATTERNS = ("model*.safetensors", "model.safetensors.index.json")
BIN_PATTERNS = ("pytorch_model*.bin", "pytorch_model.bin.index.json")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "tokenizer.model",
    "spiece.model",
)
# any one of these sets is a usable tokenizer
_TOKENIZER_SETS = (("tokenizer.json",), ("vocab.json", "merges.txt"), ("tokenizer.model",), ("spiece.model",), ("vocab.txt",))
_SAE_LENS_FILES = ("cfg.json", "sae_weights.safetensors")
_TRUE = {"1", "ON", "YES", "TRUE"}


@dataclass(frozen=True)
class Resource:
    """One thing to load. ``repo_id`` for hub resources; ``path`` for local ones (nothing to
    fetch); ``data``/``seed``/``rows`` for a streamed dataset (at least ``rows`` rows of the
    stream; ``needs``: each job's (model, data) to count the rows exactly)."""

    kind: str
    name: str
    where: str
    repo_id: str | None = None
    folder: str | None = None  # an SAE's folder in its repo
    sae_lens_format: bool = False  # cfg.json + sae_weights.safetensors (sae_lens's own layout)
    path: str | None = None
    data: DataConfig | None = None
    seed: int = 0
    rows: int = 0
    needs: tuple[tuple[ModelConfig, DataConfig], ...] = ()

    @property
    def label(self) -> str:
        return f"{self.kind if self.kind != 'sae' else 'SAE'} {self.name} ({self.where})"

    @property
    def remote(self) -> bool:
        return self.path is None


@dataclass(frozen=True)
class Found:
    path: Path  # the snapshot folder, SAE folder or file
    size: int  # bytes
    note: str = ""


def model_resources(m: ModelConfig) -> list[Resource]:
    if m.source == "embedded" and m.path:
        return [Resource("model", repr(m.path), "a local weights directory; prefetch cannot fetch it", path=m.path)]
    if m.source != "transformer_lens":
        return []  # the embedded model, the toy model: shipped or built by construction
    from transformer_lens.loading_from_pretrained import get_official_model_name

    try:
        repo = get_official_model_name(m.name)
    except ValueError:
        return []  # not a transformer_lens model: its loader says so
    return [
        Resource("model", repr(m.name), f"Hugging Face repo {repo!r}: config and weights", repo_id=repo),
        Resource("tokenizer", repr(m.name), f"Hugging Face repo {repo!r}", repo_id=repo),
    ]


def _sae_resources(s: SaeConfig) -> list[Resource]:
    if s.source == "disk":
        return [Resource("sae", repr(s.path), "a local SAE directory; prefetch cannot fetch it", path=str(s.path))]
    if s.source != "sae_lens":
        return []
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory, get_repo_id_and_folder_name

    try:
        repo, folder = get_repo_id_and_folder_name(s.release, s.sae_id)
    except ValueError:
        return []  # not in sae_lens's directory: its loader says so
    entry = get_pretrained_saes_directory()[s.release]
    where = f"Hugging Face repo {repo!r}, folder {folder!r}"
    return [Resource("sae", f"{s.release}/{s.sae_id}", where, repo, folder, entry.conversion_func is None)]


def data_uses(cfg: SensdirConfig) -> list[DataConfig]:
    """The data configs a job reads prompts with (none for studies with prompts of their own)."""
    if cfg.study is None:
        return [cfg.data]
    from sensdir.studies.sae_quality import SaeQualityConfig, prompt_data

    return [prompt_data(cfg.data, cfg.study)] if isinstance(cfg.study, SaeQualityConfig) else []


def _data_resource(cfg: SensdirConfig, d: DataConfig) -> Resource | None:
    from sensdir import data_cache

    if d.source != "hf" or not d.dataset:
        return None
    if data_cache.is_local(d):
        return Resource("dataset", repr(d.data_files), f"local {d.dataset} files", path=str(d.data_files), data=d)
    seed = cfg.run.seed
    name = f"{d.dataset!r} (split {d.split!r}, seed {seed})"
    where = (
        f"streamed by `datasets`, which never caches it; its first rows prefetched as Parquet to {data_cache.path_for(d, seed)}"
    )
    rows = d.n_stats + d.n_pool + d.n_prompts
    return Resource("dataset", name, where, data=d, seed=seed, rows=rows, needs=((cfg.model, d),))


def collect(cfgs: list[SensdirConfig]) -> list[Resource]:
    """Every resource the jobs load, once each, models first and datasets last."""
    found: dict[tuple, Resource] = {}
    for cfg in cfgs:
        items = model_resources(cfg.model) + _sae_resources(cfg.sae)
        items += [r for r in (_data_resource(cfg, d) for d in data_uses(cfg)) if r is not None]
        for r in items:
            key = (r.kind, r.name, r.where)
            if key in found and r.kind == "dataset" and r.remote:
                old = found[key]
                found[key] = replace(old, rows=max(old.rows, r.rows), needs=old.needs + r.needs)
            else:
                found.setdefault(key, r)
    return sorted(found.values(), key=lambda r: KINDS.index(r.kind))


# ---------------------------------------------------------------------------- local lookup


def hub_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def cached_file(repo_id: str, filename: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(repo_id, filename, cache_dir=hub_cache())
    return Path(hit) if isinstance(hit, str) and Path(hit).is_file() else None


def snapshot(repo_id: str) -> Path | None:
    """The cached snapshot of the repo's main revision (``refs/main``), if any."""
    repo = hub_cache() / f"models--{repo_id.replace('/', '--')}"
    ref = repo / "refs" / "main"
    if not ref.is_file():
        return None
    snap = repo / "snapshots" / ref.read_text().strip()
    return snap if snap.is_dir() else None


def _files(paths: list[Path | None]) -> list[Path] | None:
    return None if any(p is None for p in paths) else [p for p in paths if p is not None]


def _weights(repo: str) -> list[Path] | None:
    """The cached weight files transformers would load, or None when incomplete."""
    import json

    for single, index in (
        ("model.safetensors", "model.safetensors.index.json"),
        ("pytorch_model.bin", "pytorch_model.bin.index.json"),
    ):
        one = cached_file(repo, single)
        if one is not None:
            return [one]
        idx = cached_file(repo, index)
        if idx is not None:
            shards = sorted(set(json.loads(idx.read_text()).get("weight_map", {}).values()))
            files = _files([cached_file(repo, s) for s in shards])
            if files:
                return [idx, *files]
    return None


def _found(files: list[Path], where: Path | None = None) -> Found:
    return Found(where or files[0].parent, sum(f.stat().st_size for f in files))


def _locate_hub(r: Resource) -> Found | None:
    repo = str(r.repo_id)
    if r.kind == "model":
        files = _files([cached_file(repo, "config.json")])
        weights = _weights(repo)
        return _found(files + weights) if files and weights else None
    if r.kind == "tokenizer":
        for names in _TOKENIZER_SETS:
            files = _files([cached_file(repo, n) for n in names])
            if files:
                extra = [p for p in (cached_file(repo, n) for n in TOKENIZER_FILES if n not in names) if p]
                return _found(files + extra)
        return None
    folder = str(r.folder)
    if r.sae_lens_format:
        files = _files([cached_file(repo, f"{folder}/{n}") for n in _SAE_LENS_FILES])
        return _found(files) if files else None
    snap = snapshot(repo)
    files = [p for p in (snap / folder).rglob("*") if p.is_file()] if snap and (snap / folder).is_dir() else []
    return _found(files, snap / folder) if files and snap else None


def locate(r: Resource) -> Found | None:
    """Where the local caches hold ``r``, or None. A dataset counts when at least ``r.rows``
    rows of its stream are prefetched (the exact count depends on the tokenizer: prefetch
    checks that)."""
    if r.kind == "dataset" and r.data is not None:
        from sensdir import data_cache

        if not r.remote:
            import glob

            files = [Path(f) for f in glob.glob(str(r.path), recursive=True) if Path(f).is_file()]
            return _found(files, Path(str(r.path))) if files else None
        path = data_cache.path_for(r.data, r.seed)
        n = data_cache.rows_in(path, r.data, r.seed)
        return Found(path, path.stat().st_size, f"{n} rows") if n is not None and n >= r.rows else None
    if not r.remote:
        p = Path(str(r.path))
        marker = "config.json" if r.kind == "model" else "cfg.json"
        return Found(p, sum(f.stat().st_size for f in p.rglob("*") if f.is_file())) if (p / marker).is_file() else None
    return _locate_hub(r)


# ---------------------------------------------------------------------------- the check


def unreachable_kinds() -> set[str]:
    """The kinds of hub resources that cannot be downloaded here: all with HF_HUB_OFFLINE=1,
    datasets with HF_DATASETS_OFFLINE=1."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in _TRUE:
        return set(KINDS)
    return {"dataset"} if os.environ.get("HF_DATASETS_OFFLINE", "").strip().upper() in _TRUE else set()


def prefetch_command(overrides: list[str] | None) -> str:
    return " ".join(["sensdir-prefetch", *(shlex.quote(o) for o in overrides or [])])


def missing_error(missing: list[Resource], overrides: list[str] | None, offline: bool = True) -> MissingResourceError:
    """One error naming every resource in ``missing`` and the command that fetches them
    (``offline``: a run found the hub unreachable; else a check of the caches alone)."""
    from huggingface_hub import constants

    from sensdir import data_cache

    what = "; ".join(r.label for r in missing)
    them = "it is not" if len(missing) == 1 else f"none of these {len(missing)} is"
    why = "the hub is unreachable (no network, or HF_HUB_OFFLINE=1)" if offline else "a run without the hub would fail"
    msg = (
        f"cannot load {what}: {them} in the local cache (Hugging Face cache {hub_cache()}, prefetched data "
        f"{data_cache.root()}) and {why}."
    )
    if any(r.remote for r in missing):
        msg += (
            f" Fill the cache where the hub is reachable (e.g. the login node), with the same HF_HOME "
            f"({constants.HF_HOME}, on storage this machine shares; or copy it here): "
            f"`{prefetch_command(overrides)}`, then rerun (a sweep's own overrides prefetch every job of it at once)."
        )
    if any(r.kind == "dataset" and r.remote for r in missing):
        msg += " Or point data.dataset=parquet data.data_files=... at local Parquet files."
    return MissingResourceError(msg)


def missing(cfgs: list[SensdirConfig], kinds: set[str] | None = None) -> list[Resource]:
    """The jobs' resources (of ``kinds``, and every local one) that the local caches lack."""
    return [r for r in collect(cfgs) if (not r.remote or kinds is None or r.kind in kinds) and locate(r) is None]


def check(cfgs: list[SensdirConfig], overrides: list[str] | None, kinds: set[str] | None = None) -> list[Resource]:
    """The jobs' resources; raises one ``MissingResourceError`` listing every missing one."""
    lacking = missing(cfgs, kinds)
    if lacking:
        raise missing_error(lacking, overrides)
    return collect(cfgs)


def _complete(cfg: SensdirConfig) -> bool:
    from sensdir.artifacts.identity import config_hash, job_dir
    from sensdir.artifacts.layout import ShardFiles
    from sensdir.artifacts.records import is_complete

    files = ShardFiles.of(job_dir(cfg), cfg.run.shard, cfg.run.shards)
    return not cfg.run.overwrite and is_complete(files, config_hash(cfg))


def preflight(cfg: SensdirConfig, overrides: list[str] | None) -> None:
    """Before a job loads anything, offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE): one
    ``MissingResourceError`` naming every resource it would fail to load. Nothing is checked
    for a job whose shard is complete (it is skipped)."""
    remote = [r for r in collect([cfg]) if r.remote]
    kinds = unreachable_kinds() if remote else set()
    if not any(r.kind in kinds for r in remote) or _complete(cfg):
        return
    check([cfg], overrides, kinds)


def widen(err: MissingResourceError, cfg: SensdirConfig, overrides: list[str] | None) -> MissingResourceError:
    """A loader found the hub unreachable (``err``): the error naming every missing resource of
    the job instead, when the caches lack more than the one ``err`` names."""
    lacking = missing([cfg])
    return missing_error(lacking, overrides) if len(lacking) > 1 else err
