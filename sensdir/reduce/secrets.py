"""Keep credentials out of every output: configs and provenance are sanitized before they
are written to the table, the HTML report, JSON dumps or the W&B run."""

from __future__ import annotations

import os
import re
from typing import Any

REDACTED = "<redacted>"
_SECRET_KEY = re.compile(r"(api[_-]?key|token|secret|password|passwd|credential|auth)", re.IGNORECASE)
_SECRET_ENV = ("WANDB_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_IDENTITY_TOKEN_FILE")


def secret_values() -> list[str]:
    """Values of credential environment variables (and of any variable whose name looks like
    one) long enough to be worth hiding."""
    vals = {os.environ.get(k, "") for k in _SECRET_ENV}
    vals |= {v for k, v in os.environ.items() if _SECRET_KEY.search(k)}
    return sorted((v for v in vals if len(v) >= 8), key=len, reverse=True)


def scrub_text(text: str, secrets: list[str] | None = None) -> str:
    for s in secret_values() if secrets is None else secrets:
        text = text.replace(s, REDACTED)
    return text


def sanitize(obj: Any, secrets: list[str] | None = None) -> Any:
    """A copy of obj with secret-looking keys' values and any known secret value redacted."""
    secrets = secret_values() if secrets is None else secrets
    if isinstance(obj, dict):
        return {
            k: (REDACTED if isinstance(k, str) and _SECRET_KEY.search(k) and v not in (None, "") else sanitize(v, secrets))
            for k, v in obj.items()
        }
    if isinstance(obj, (list, tuple)):
        return [sanitize(v, secrets) for v in obj]
    if isinstance(obj, str):
        return scrub_text(obj, secrets)
    return obj
