"""Typed configuration: frozen dataclasses, registered in Hydra's ConfigStore.

Hydra composes YAML from ``sensdir/conf/`` onto these schemas, so a misspelt key or a wrongly typed
value fails at composition with a message naming the field. ``to_config`` turns the composed
DictConfig into the frozen dataclass objects that ``run_job`` takes; tests build those
objects directly.

Plugin groups (``direction``, ``schedule``, ``study``) have one dataclass per plugin, registered by the
plugin's own module (see ``sensdir.registry``); ``register_configs`` pushes them into the
ConfigStore so that ``direction=<name>`` works with no YAML file and no list to edit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

# OmegaConf's marker for a mandatory value; spelled out so that importing the config
# classes does not import omegaconf (the engine and benchmark run without it).
MISSING: Any = "???"


def bounded(
    default: Any, *, ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None
) -> Any:
    """A numeric field with its valid range, checked at startup (``sensdir.validate``) with a
    message naming the field; every float must also be finite."""
    return field(default=default, metadata={"bounds": {"ge": ge, "gt": gt, "le": le, "lt": lt}})


class Choice(str, Enum):
    """A setting with a fixed set of values: Hydra rejects any other at composition, naming the
    valid ones. A ``str`` subclass, so comparisons, JSON and config hashes see the plain value."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    @classmethod
    def values(cls) -> list[str]:
        return [c.value for c in cls]


class ModelSource(Choice):
    embedded = "embedded"  # the small model shipped in sensdir/embedded/assets (no download)
    transformer_lens = "transformer_lens"  # HookedTransformer.from_pretrained(name): the HF hub or its cache
    toy_error_correction = "toy_error_correction"  # sensdir.toy_model, built by construction (METHODS §11)


class Dtype(Choice):
    float32 = "float32"
    float16 = "float16"
    bfloat16 = "bfloat16"
    float64 = "float64"


class SaeSource(Choice):
    embedded = "embedded"  # an SAE shipped with sensdir, addressed like sae_lens as (release, sae_id)
    sae_lens = "sae_lens"  # SAE.from_pretrained(release, sae_id)
    disk = "disk"  # SAE.load_from_disk(path)
    toy_error_correction = "toy_error_correction"  # the toy model's true features as an SAE (sensdir.toy_model)
    none = "none"  # no SAE: only direction types that need none (real, random, ...); site.hook must be set


class DataSource(Choice):
    embedded = "embedded"  # held-out documents of the embedded model's offline corpus
    hf = "hf"  # a Hugging Face `datasets` dataset (streaming), e.g. OpenWebText


class PlateauRule(Choice):
    """How ``metric.plateau_l2`` becomes the threshold on final-residual L2 (METHODS §10)."""

    absolute = "absolute"  # the threshold is plateau_l2 itself (GPT-2 small: 20)
    # plateau_l2 x the median final-residual norm (last position) of the stats prompts, so the
    # threshold follows the model's own scale
    final_norm = "final_norm"


class Positions(Choice):
    last = "last"  # [GP24]: the last position
    all = "all"  # [LH24]: every position, each its own walk


class WandbMode(Choice):
    """Per-job W&B logging (``sensdir.job.wandb_log``); ``offline`` writes runs to upload later
    with ``wandb sync``."""

    online = "online"
    offline = "offline"
    disabled = "disabled"


class EnginePath(Choice):
    """See ``sensdir.engine.walks``."""

    auto = "auto"
    lean = "lean"
    kv_cache = "kv_cache"
    full = "full"


@dataclass(frozen=True)
class ModelConfig:
    source: ModelSource = ModelSource.embedded
    name: str = "embedded"
    path: str | None = None  # embedded weights dir; None = the shipped one
    dtype: Dtype = Dtype.float32


@dataclass(frozen=True)
class SaeConfig:
    source: SaeSource = SaeSource.embedded
    release: str = "embedded"
    sae_id: str = "blocks.1.hook_resid_pre/l1-mid"
    path: str | None = None

    def described(self) -> tuple[str, str | None]:
        """(release, id) as shards and W&B runs name the SAE: a disk SAE by its path."""
        if self.source == SaeSource.disk:
            return "disk", self.path
        if self.source == SaeSource.none:
            return "none", None
        return self.release, self.sae_id


@dataclass(frozen=True)
class SiteConfig:
    # None: the hook the SAE was trained on (so sweeping SAEs across layers moves the site)
    hook: str | None = None
    positions: Positions = Positions.last


@dataclass(frozen=True)
class DataConfig:
    source: DataSource = DataSource.embedded
    n_ctx: int = bounded(10, ge=1)
    prepend_bos: bool = False  # METHODS §1 (choice): no BOS by default
    n_prompts: int = bounded(100, ge=1)  # base prompts per job
    n_stats: int = bounded(1000, ge=2)  # disjoint prompts for mu, Sigma, firing frequencies (METHODS §1)
    n_pool: int = bounded(300, ge=1)  # disjoint prompts whose activations serve as "other real" targets
    dataset: str | None = None
    dataset_config: str | None = None
    split: str = "train"
    text_column: str = "text"
    data_files: str | None = None


@dataclass(frozen=True)
class StatsConfig:
    cov_eps: float = bounded(0.01, gt=0)  # METHODS §1: Sigma + eps * I


@dataclass(frozen=True)
class MetricConfig:
    names: tuple[str, ...] = ("kl", "l2")  # registered metrics (sensdir.metrics), each its curve and summaries
    ms_threshold: float = bounded(0.02, ge=0)  # METHODS §4: no step rising by more than this -> last step
    # (choice) rises within this fraction of the largest are ties, the earliest wins
    ms_tie_rtol: float = bounded(1e-3, ge=0, lt=1)
    # METHODS §4/§10: the plateau ends where l2 >= the threshold that plateau_rule makes of this
    # (absolute: 20, GPT-2 small's scale; final_norm: a fraction of the model's own norms)
    plateau_l2: float = bounded(20.0, gt=0)
    plateau_rule: PlateauRule = PlateauRule.absolute


@dataclass(frozen=True)
class RunConfig:
    name: str = "default"
    out_dir: str = "results"
    seed: int = bounded(0, ge=0)
    n_targets: int = bounded(1, ge=1)  # perturbations (targets) per base prompt
    device: str = "auto"  # "auto" = cuda if available else cpu
    shards: int = bounded(1, ge=1)  # prompts are split into this many shards ...
    shard: int = bounded(0, ge=0)  # ... and this job computes this one
    overwrite: bool = False
    progress: bool = True


@dataclass(frozen=True)
class EngineConfig:
    """How the walks are computed; changes speed and memory, not results (beyond float
    rounding), so it is not part of a job's identity."""

    batch_size: int = bounded(4096, ge=1)  # perturbed activations (rows x steps) per forward pass
    path: EnginePath = EnginePath.auto
    logits_mb: float = bounded(512.0, gt=0)  # budget for the vocabulary-sized logits and log-probs
    compile: bool = True  # fuse the KL's vocabulary passes with torch.compile (eager if that fails)
    # (choice) last-position walks go through the model 16 at a time, so that no number depends
    # on batch_size (matrix products round differently for other shapes); false: batch_size-sized
    # passes, faster on a GPU, with max-slope steps that may move between near-equal rises
    batch_invariant: bool = True


@dataclass(frozen=True)
class WandbConfig:
    """Opt-in W&B run per job (``sensdir.job.wandb_log``): live per-step mean curves and end
    summaries. Changes no result, so it is not part of a job's identity. The API key comes from
    the environment (``WANDB_API_KEY``, ``wandb login``), never from here."""

    mode: WandbMode = WandbMode.disabled
    project: str | None = None  # None: $WANDB_PROJECT, else "sensdir"
    entity: str | None = None  # None: $WANDB_ENTITY, else the key's default entity
    group: str | None = None  # None: the sweep's name (run.name); the reduce joins the same group
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class DirectionConfig:
    name: str = MISSING

    def label(self) -> str:
        """How results are grouped: the ``direction`` column and the job directory's name.
        Types whose options change what is measured (e.g. sae_feature's group) refine it."""
        return self.name


@dataclass(frozen=True)
class ScheduleConfig:
    name: str = MISSING
    n_steps: int = 100


@dataclass(frozen=True)
class SensdirConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    sae: SaeConfig = field(default_factory=SaeConfig)
    site: SiteConfig = field(default_factory=SiteConfig)
    data: DataConfig = field(default_factory=DataConfig)
    stats: StatsConfig = field(default_factory=StatsConfig)
    direction: Any = MISSING  # a registered DirectionConfig subclass
    schedule: Any = MISSING  # a registered ScheduleConfig subclass
    metric: MetricConfig = field(default_factory=MetricConfig)
    run: RunConfig = field(default_factory=RunConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    study: Any = None  # a registered StudyConfig subclass; None = the walks above
    experiment: str | None = None


def _editable_node(cls: type) -> Any:
    """A structured node for ``cls`` that Hydra may merge into.

    OmegaConf marks nodes of frozen dataclasses read-only, which would make every YAML
    override fail; types and key checks stay, and ``to_config`` rebuilds the frozen objects.
    """
    from omegaconf import OmegaConf

    node = OmegaConf.structured(cls)

    def unfreeze(cfg: Any) -> None:
        OmegaConf.set_readonly(cfg, None)
        keys = range(len(cfg)) if OmegaConf.is_list(cfg) else cfg.keys()
        for key in keys:
            child = cfg._get_node(key)
            if OmegaConf.is_config(child):
                unfreeze(child)
            else:
                child._set_flag("readonly", None)

    unfreeze(node)
    return node


def register_configs() -> None:
    """Register the schema and every plugin's config in Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    from sensdir.directions import DIRECTIONS
    from sensdir.schedules import SCHEDULES
    from sensdir.studies import STUDIES

    cs = ConfigStore.instance()
    cs.store(name="sensdir_schema", node=_editable_node(SensdirConfig))
    for group, registry in (("direction", DIRECTIONS), ("schedule", SCHEDULES), ("study", STUDIES)):
        for entry in registry.entries():
            cs.store(group=group, name=entry.name, node=_editable_node(entry.config_cls))


def to_config(cfg: Any) -> SensdirConfig:
    """Composed DictConfig -> frozen ``SensdirConfig`` (plugin sections become their dataclasses)."""
    from omegaconf import OmegaConf

    obj = OmegaConf.to_object(cfg)
    if isinstance(obj, SensdirConfig):
        return obj
    raise TypeError(f"expected a composed sensdir config, got {type(obj).__name__}")
