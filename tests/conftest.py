"""Shared test setup: Hypothesis profiles and the reference-availability policy."""

from __future__ import annotations

import os
from pathlib import Path

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


SRC = Path(__file__).resolve().parents[1] / "src"


def one_process_env(**extra: str) -> dict[str, str]:
    """This environment for a `kdpm2` subprocess: this checkout's package, no launcher variables.

    ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` are dropped (a test run under a launcher must
    not make its subprocesses think they share a job); ``extra`` is added.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env
