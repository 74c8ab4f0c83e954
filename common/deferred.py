"""Defer a module that is imported but never used, so it costs no memory until it is.

Why: paho-mqtt's client imports `urllib.request` at module level, and so `http.client` and
most of `email` (3.1 MiB resident), only to look up a proxy when PySocks is installed, which
Hedgerow does not install. The edge daemons have memory budgets (docs/benchmarks.md), and
importlib.util.LazyLoader cannot help on Python 3.11: the import system reads the module's
`__spec__` on every `import` statement, and any attribute read makes a lazy module load.

`defer(name)` puts a stand-in module in sys.modules (and on its parent package) with the real
module's spec; the first read of any other attribute imports the real module, which then
replaces the stand-in everywhere the import system looks, and answers for it.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types

_lock = threading.Lock()


class _Deferred(types.ModuleType):
    """The stand-in: attributes it does not have come from the real module, loaded once."""

    def __getattr__(self, attr: str) -> object:
        if attr.startswith("__") and attr.endswith("__") and attr != "__all__":
            raise AttributeError(attr)  # copy/pickle/inspect probes: do not load for them
        return getattr(_load(self), attr)


def _load(stand_in: _Deferred) -> types.ModuleType:
    name = stand_in.__name__
    with _lock:
        current = sys.modules.get(name)
        if current is not None and current is not stand_in:
            return current
        del sys.modules[name]
        try:
            return importlib.import_module(name)  # also sets the parent package's attribute
        except BaseException:
            sys.modules[name] = stand_in
            raise


def defer(name: str) -> None:
    """Stand in for `name` (a submodule, e.g. "urllib.request") until it is used. Does nothing
    if it is already imported or cannot be found."""
    if name in sys.modules:
        return
    parent_name, _, child = name.rpartition(".")
    try:
        parent = importlib.import_module(parent_name) if parent_name else None
        spec = importlib.util.find_spec(name)
    except ImportError:
        return
    if spec is None:
        return
    stand_in = _Deferred(name)
    stand_in.__spec__ = spec
    stand_in.__loader__ = spec.loader
    stand_in.__package__ = spec.parent
    stand_in.__file__ = spec.origin
    sys.modules[name] = stand_in
    if parent is not None:
        setattr(parent, child, stand_in)


def loaded(name: str) -> bool:
    """True if the real module `name` has been imported (not only stood in for)."""
    return name in sys.modules and not isinstance(sys.modules[name], _Deferred)
