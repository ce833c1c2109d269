"""Errors a user can fix; the entry point prints them as one line and exits non-zero."""


class SensdirError(Exception):
    """Base class: bad input detected before any compute."""


class ConfigError(SensdirError, ValueError):
    """The configuration asks for something impossible or unknown."""


class MissingResourceError(SensdirError, FileNotFoundError):
    """Weights, an SAE or data are not where the configuration says."""
