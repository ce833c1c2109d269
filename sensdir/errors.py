"""Errors a user can fix; the entry point prints them as one line and exits non-zero."""


class SensdirError(Exception):
    """Base class: bad input detected before any compute."""


class ConfigError(SensdirError, ValueError):
    """The configuration asks for something impossible or unknown."""


class MissingResourceError(SensdirError, FileNotFoundError):
    """Weights, an SAE or data are not where the configuration says."""


class HubUnreachableError(MissingResourceError):
    """A resource is neither in the local Hugging Face cache nor downloadable (no network, or
    HF_HUB_OFFLINE=1)."""


class CorruptResourceError(SensdirError, ValueError):
    """Weights, an SAE or a config file are there but unreadable (truncated, damaged, wrong format)."""


class OutputError(SensdirError, OSError):
    """Results cannot be written where the configuration says (read-only folder, full disk, ...)."""
