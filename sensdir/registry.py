"""Name -> (config dataclass, implementation) registries for plugins.

A plugin module registers itself next to its implementation::

    @dataclass(frozen=True)
    class RealConfig(DirectionConfig):
        name: str = "real"

    @DIRECTIONS.register("real", RealConfig)
    class Real(TargetDirection): ...

Plugins are discovered by importing every module of the registry's package (and any module
advertised under the entry-point group ``sensdir.<kind>``), so adding one is adding one file.
Discovery happens on first lookup, never at import time of ``sensdir``.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """Raised for a plugin name that is not registered; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want the plain message
        return str(self.args[0])


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    config_cls: type
    impl: T


class Registry(Generic[T]):
    def __init__(self, kind: str, package: str):
        self.kind = kind
        self.package = package
        self._entries: dict[str, Entry[T]] = {}
        self._discovered = False

    def register(self, name: str, config_cls: type) -> Callable[[T], T]:
        def deco(impl: T) -> T:
            old = self._entries.get(name)
            if old is not None and old.impl is not impl:
                raise ValueError(f"{self.kind} {name!r} registered twice ({old.impl} and {impl})")
            self._entries[name] = Entry(name, config_cls, impl)
            return impl

        return deco

    def discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        pkg = importlib.import_module(self.package)
        for mod in pkgutil.iter_modules(pkg.__path__):
            if not mod.name.startswith("_"):
                importlib.import_module(f"{self.package}.{mod.name}")
        for ep in entry_points(group=f"sensdir.{self.kind}"):
            ep.load()

    def names(self) -> list[str]:
        self.discover()
        return sorted(self._entries)

    def entries(self) -> list[Entry[T]]:
        self.discover()
        return [self._entries[n] for n in sorted(self._entries)]

    def get(self, name: str) -> Entry[T]:
        self.discover()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(f"unknown {self.kind} {name!r}; valid choices: {', '.join(self.names())}") from None

    def build(self, cfg: Any, *args: Any, **kwargs: Any) -> Any:
        entry = self.get(cfg.name)
        if not isinstance(cfg, entry.config_cls):
            raise TypeError(f"{self.kind} {cfg.name!r} expects {entry.config_cls.__name__}, got {type(cfg).__name__}")
        return entry.impl(cfg, *args, **kwargs)  # type: ignore[operator]
