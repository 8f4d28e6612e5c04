"""Doctest collection of the package: the diffusers shell is collected only where it imports."""

from __future__ import annotations

import importlib.util

collect_ignore = []
try:
    if importlib.util.find_spec("diffusers") is None:
        raise ImportError
    import diffusers.schedulers.scheduling_utils  # noqa: F401
except ImportError:  # no diffusers (or no torch): the module cannot be imported, by design
    collect_ignore.append("src/kdpm2/_diffusers.py")
