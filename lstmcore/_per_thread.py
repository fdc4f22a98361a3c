"""Attributes with one value per thread, for what a forward leaves to its backward (the tape) and what the backward
computes (gradients). The kernels release the GIL, so threads can share one layer: each then differentiates its own
last forward and reads its own gradients, whatever the other threads do meanwhile."""
from __future__ import annotations

import threading

_STORE = "_per_thread_values"


class _Store:
    __slots__ = ("local", "latest")

    def __init__(self):
        self.local = threading.local()
        self.latest = {}  # name -> the value set last, by any thread


def _store(obj) -> _Store:
    store = obj.__dict__.get(_STORE)
    if store is None:
        store = obj.__dict__.setdefault(_STORE, _Store())  # atomic: two threads get the same store
    return store


class per_thread:
    """A descriptor: ``obj.name`` has one value per thread.

    A thread that has not set it reads the value set last by any thread when ``shared_fallback`` (gradients computed
    in a worker thread, read from the main thread), else ``default()`` (a tape: a backward never uses the forward of
    another thread).
    """

    def __init__(self, default=lambda: None, shared_fallback=False):
        self.default = default
        self.shared_fallback = shared_fallback

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        store = _store(obj)
        try:
            return getattr(store.local, self.name)
        except AttributeError:
            pass
        if self.shared_fallback and self.name in store.latest:
            return store.latest[self.name]
        value = self.default()
        setattr(store.local, self.name, value)
        return value

    def __set__(self, obj, value):
        store = _store(obj)
        setattr(store.local, self.name, value)
        if self.shared_fallback:
            store.latest[self.name] = value


class PerThreadState:
    """Mixin: copies and pickles carry the object without its per-thread values (a forward's tape holds workspaces
    that belong to this process and thread)."""

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop(_STORE, None)
        return state
