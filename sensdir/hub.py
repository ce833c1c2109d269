"""Plain errors when a download from the Hugging Face hub is impossible."""

from __future__ import annotations

from typing import Callable, TypeVar

from sensdir.errors import MissingResourceError

T = TypeVar("T")

_HINT = (
    "it is neither in the local Hugging Face cache nor downloadable (no network, or HF_HUB_OFFLINE=1). "
    "On a machine with hub access run the same command once to fill the cache (HF_HOME, default "
    "~/.cache/huggingface), copy that cache here, or use the embedded default (model=embedded sae=embedded)."
)


def _is_offline_error(exc: BaseException) -> bool:
    names = {type(e).__name__ for e in _chain(exc)}
    offline = {
        "LocalEntryNotFoundError", "OfflineModeIsEnabled", "ConnectionError", "ConnectTimeout",
        "ReadTimeout", "MaxRetryError", "NameResolutionError", "ConnectError", "HfHubHTTPError",
    }
    text = " ".join(str(e) for e in _chain(exc)).lower()
    return bool(names & offline) or "offline" in text or "connection" in text or "couldn't connect" in text


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def hub_call(what: str, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - re-raised unless it is the offline case
        if _is_offline_error(e):
            raise MissingResourceError(f"cannot load {what}: {_HINT}") from None
        raise
