"""Plain errors when a download from the Hugging Face hub is impossible.

``hub_call`` runs a loader that reads the hub or its local cache. When the resource is not
cached and the hub cannot be reached (no network, or ``HF_HUB_OFFLINE=1``) the loader's
exception chain (and huggingface_hub's "Retrying in 1s [Retry 1/5]" warnings) is replaced
by one ``HubUnreachableError`` (a ``MissingResourceError``) saying what is missing and how to get
it here: ``sensdir-prefetch`` on a machine with hub access. (``sensdir.resources`` checks every
resource of a job before loading, and lists all the missing ones at once.)
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import TypeVar

from sensdir.errors import HubUnreachableError

T = TypeVar("T")

_OFFLINE_TYPES = {
    "LocalEntryNotFoundError",
    "OfflineModeIsEnabled",
    "ConnectionError",
    "ConnectTimeout",
    "ConnectError",
    "ReadTimeout",
    "MaxRetryError",
    "NameResolutionError",
    "NetworkError",
    "TimeoutException",
}
# huggingface_hub logs one warning per retry of an unreachable hub before giving up
_HTTP_LOGGER = "huggingface_hub.utils._http"


def _chain(exc: BaseException | None):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _is_offline_error(exc: BaseException) -> bool:
    chain = list(_chain(exc))
    if {type(e).__name__ for e in chain} & _OFFLINE_TYPES:
        return True
    text = " ".join(str(e) for e in chain).lower()
    return "offline" in text or "couldn't connect" in text or "couldn't reach" in text


class _DropRetryNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not ("Retrying in" in msg or "thrown while requesting" in msg)


@contextlib.contextmanager
def _quiet_retries() -> Iterator[None]:
    logger, f = logging.getLogger(_HTTP_LOGGER), _DropRetryNoise()
    logger.addFilter(f)
    try:
        yield
    finally:
        logger.removeFilter(f)


def cache_dir() -> str:
    try:
        from huggingface_hub import constants

        return constants.HF_HUB_CACHE
    except Exception:  # noqa: BLE001 - only used in a message
        return "$HF_HOME/hub"


PREFETCH = "sensdir-prefetch"
_FILL = (
    f"On a machine with hub access (e.g. the login node), run `{PREFETCH}` with this run's overrides and "
    "HF_HOME=DIR{alt}; then set HF_HOME=DIR here (DIR on storage both machines share, or copied here). "
    "Or use the embedded default: model=embedded sae=embedded data=embedded."
)


def model_hint(name: str) -> tuple[str, str]:
    try:
        from transformer_lens.loading_from_pretrained import get_official_model_name

        repo = get_official_model_name(name)
    except Exception:  # noqa: BLE001 - only used in a message
        repo = name
    alt = f" (or only HF_HOME=DIR python -c \"from transformer_lens import HookedTransformer; HookedTransformer.from_pretrained('{name}')\")"
    return f"model {name!r} (Hugging Face repo {repo!r}, loaded by transformer_lens)", _FILL.format(alt=alt)


def sae_hint(release: str, sae_id: str) -> tuple[str, str]:
    try:
        from sae_lens.loading.pretrained_saes_directory import get_repo_id_and_folder_name

        repo, folder = get_repo_id_and_folder_name(release, sae_id)
    except Exception:  # noqa: BLE001 - only used in a message
        return f"SAE {release}/{sae_id}", _FILL.format(alt="")
    alt = f" (or HF_HOME=DIR hf download {repo} --include '{folder}/*')"
    return f"SAE {release}/{sae_id} (Hugging Face repo {repo!r}, folder {folder!r})", _FILL.format(alt=alt)


def dataset_hint(dataset: str) -> tuple[str, str]:
    return (
        f"dataset {dataset!r} (Hugging Face dataset repo, streamed by `datasets`)",
        "Streamed data is never cached by `datasets`. On a machine with hub access (e.g. the login node), "
        f"`{PREFETCH}` with this run's overrides and HF_HOME=DIR writes the rows the jobs read as Parquet under "
        "DIR/sensdir/datasets; set HF_HOME=DIR here. Or download its Parquet files, "
        f"e.g. `hf download {dataset} --repo-type dataset --include '*.parquet' --local-dir DIR` (add "
        "--revision refs/convert/parquet if the repo holds no Parquet files), copy DIR here and run with "
        "data.dataset=parquet data.data_files='DIR/**/*.parquet' (or use data=embedded).",
    )


def hub_call(what: str | tuple[str, str], fn: Callable[[], T]) -> T:
    """``fn()``; when it fails because the resource is neither cached nor downloadable, one
    ``HubUnreachableError`` naming ``what`` (a name, or (name, how to get it) from the
    ``*_hint`` functions) instead of the loader's traceback."""
    name, how = what if isinstance(what, tuple) else (what, _FILL.format(alt=""))
    with _quiet_retries():
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - re-raised unless it is the offline case
            if _is_offline_error(e):
                raise HubUnreachableError(
                    f"cannot load {name}: it is not in the Hugging Face cache ({cache_dir()}) and the hub is "
                    f"unreachable (no network, or HF_HUB_OFFLINE=1). {how}"
                ) from None
            raise
