"""Package attributes that load on first use (PEP 562): `face3d` and `facesynth` export their main
names without importing torch when the package is imported, so that `facesynth rotate` can fork
its face-detection helper before torch loads (`face3d.detection_helper`)."""
from __future__ import annotations

import importlib


def lazy_names(namespace: dict, sources: dict[str, str]):
    """The `__getattr__` and `__dir__` of a package whose names `sources` (name -> module) load on
    first use; a loaded name is stored in `namespace`, so later lookups skip the hook."""

    def __getattr__(name: str):
        if name not in sources:
            raise AttributeError(f"module {namespace['__name__']!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(sources[name]), name)
        namespace[name] = value
        return value

    def __dir__():
        return sorted(set(namespace) | set(sources))

    return __getattr__, __dir__
