"""Shared test setup: Hypothesis profiles and the reference-availability policy."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=30, deadline=None)
settings.register_profile(
    "ci",
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def require_reference(module: str) -> object:
    """Import a parity reference, or skip; with KDPM2_REQUIRE_REFERENCES=1 a missing one fails."""
    try:
        return __import__(module, fromlist=["_"])
    except Exception as e:  # an import can fail with more than ImportError (broken installs)
        if os.environ.get("KDPM2_REQUIRE_REFERENCES") == "1":
            pytest.fail(f"parity reference {module!r} is required but failed to import: {e!r}")
        pytest.skip(f"parity reference {module!r} not importable: {e!r}")
