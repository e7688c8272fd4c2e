"""Names that load on first use. Package attributes (PEP 562): `face3d` and `facesynth` export their
main names without importing torch when the package is imported, so that `facesynth rotate` can
fork its face-detection helper before torch loads (`face3d.detection_helper`). Modules
(`LazyModule`): a module that only some calls need, imported by the first of them."""
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


class LazyModule:
    """A stand-in for the module `name`, imported on the first attribute looked up on it: for a
    module that only some of a module's functions need and that costs time to import (SciPy's
    sparse modules: 0.24-0.28 s, which every `rotate` paid for `--sfs`, off by default)."""

    def __init__(self, name: str):
        self._name = name
        self._module = None

    def __getattr__(self, attr: str):
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)

    def __repr__(self) -> str:
        return f"<LazyModule {self._name!r}{' (loaded)' if self._module is not None else ''}>"
