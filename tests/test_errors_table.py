"""Every row of docs/errors.md is run here: the documented call raises the documented error."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import kdpm2
import kdpm2.scheduler

TABLE = Path(__file__).resolve().parents[1] / "docs" / "errors.md"
ROW = re.compile(r"^\| (\d+) \| `(.+)` \| `(\w+)` \| (.+) \|$")


def _rows():
    rows = [ROW.match(line) for line in TABLE.read_text(encoding="utf-8").splitlines()]
    return [m.groups() for m in rows if m]


def test_table_has_the_promised_rows():
    """The table documents at least 50 bad inputs, numbered 1..n without gaps."""
    numbers = [int(r[0]) for r in _rows()]
    assert len(numbers) >= 50
    assert numbers == list(range(1, len(numbers) + 1))


@pytest.fixture
def namespace(tmp_path):
    try:
        import torch
    except ImportError:  # the NumPy-only rows still run
        torch = None
    S = kdpm2.KDPM2AncestralDiscreteScheduler
    x = np.ones((2, 2), np.float32)
    ready = S()
    ready.set_timesteps(2)
    done = S()
    done.set_timesteps(2)
    for t in done.timesteps:
        done.step(x, t, x, generator=np.random.default_rng(0))
    half = S()
    half.set_timesteps(2)
    half.set_begin_index(1)
    (tmp_path / "bad_json").mkdir()
    (tmp_path / "bad_json" / "scheduler_config.json").write_text('{"eta": 1.0, ,}')
    (tmp_path / "bad_type").mkdir()
    (tmp_path / "bad_type" / "scheduler_config.json").write_text('{"use_karras_sigmas": "yes"}')
    mid = S()
    mid.set_timesteps(2)
    mid.step(x, mid.timesteps[0], x)
    return {
        "S": S,
        "mid": mid,
        "K": kdpm2.scheduler.KDPM2AncestralDiscreteScheduler,
        "F": kdpm2.FlowMatchKDPM2AncestralDiscreteScheduler,
        "half": half,
        "den": lambda x, s: x * 0,
        "sig": kdpm2.get_sigmas_karras(2, 0.1, 10.0),
        "np": np,
        "torch": torch,
        "kdpm2": kdpm2,
        "x": x,
        "xt": None if torch is None else torch.ones(2, 2),
        "ready": ready,
        "done": done,
        "tmp": tmp_path,
        "bad_json": tmp_path / "bad_json",
        "bad_type": tmp_path / "bad_type",
    }


@pytest.mark.parametrize(("number", "call", "exc_name", "message"), _rows())
def test_documented_error(namespace, number, call, exc_name, message):
    """The call raises exactly the documented exception type and message."""
    if namespace["torch"] is None and re.search(r"\b(torch|xt)\b", call):
        pytest.skip("this row needs torch")
    expected_type = getattr(kdpm2, exc_name, None) or __builtins__[exc_name]
    ready = namespace["ready"]
    before = (ready.step_index, ready.num_inference_steps)
    with pytest.raises(expected_type) as info:
        eval(call, namespace)  # the table's own text is the code under test
    assert str(info.value) == message.replace("{tmp}", str(namespace["tmp"]))
    assert (ready.step_index, ready.num_inference_steps) == before


def test_nan_model_output_propagates_and_state_stays_valid():
    """NaN in model_output is not checked (no per-call pass or sync); it propagates, and the
    scheduler goes on normally with finite inputs afterwards."""
    sch = kdpm2.KDPM2AncestralDiscreteScheduler()
    sch.set_timesteps(3)
    x = np.ones((1, 2), np.float32)
    bad = np.array([[np.nan, 0.0]], np.float32)
    out = sch.step(bad, sch.timesteps[0], x).prev_sample
    assert np.isnan(out[0, 0])
    assert np.isfinite(out[0, 1])
    assert sch.step_index == 1
    nxt = sch.step(np.zeros_like(x), sch.timesteps[1], x, generator=np.random.default_rng(0))
    assert np.isfinite(nxt.prev_sample).all()
