"""Tests for scripts/train_digits.py: the two forward processes and a reproducible run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_digits.py"


@pytest.fixture(scope="module")
def train_digits():
    spec = importlib.util.spec_from_file_location("train_digits", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_flow_batch_is_the_rectified_flow_forward_process(train_digits):
    """If this fails, the flow model is trained on another interpolation, target or timestep
    scale than the flow scheduler samples with (x_s = (1 - s) x0 + s eps, v = eps - x0,
    t = 1000 s)."""
    rng = np.random.default_rng(0)
    x0 = train_digits.load_training_data()
    x_s, t, v = train_digits.flow_batch(rng, x0, 1000)
    s = (t / 1000)[:, None]
    assert 0.0 <= t.min() < 10.0
    assert 990.0 < t.max() <= 1000.0
    np.testing.assert_allclose(x0, x_s - s * v, atol=1e-12)  # the denoised estimate
    eps = x_s + (1 - s) * v  # the noise end of the straight line
    assert abs(eps.mean()) < 0.02
    assert abs(eps.std() - 1.0) < 0.02


def test_flow_run_is_reproducible_and_writes_a_flow_bundle(train_digits, tmp_path):
    """If this fails, `train_digits.py --flow` is not deterministic for a seed (the shipped
    weights could not be regenerated), or writes the diffusion scheduler config."""
    outputs = []
    threads = torch.get_num_threads()
    for name in ("a", "b"):
        args = train_digits.parse_args(
            ["--flow", "--steps", "3", "--width", "16", "--blocks", "1", "--out-dir",
             str(tmp_path / name)]
        )  # fmt: skip
        with torch.random.fork_rng():  # train() seeds torch and sets its threads
            try:
                weights, info = train_digits.train(args)
            finally:
                torch.set_num_threads(threads)
        train_digits.write_outputs(args.out_dir, weights, info, train_digits.FLOW_SCHEDULER_CONFIG)
        outputs.append((tmp_path / name / "digits.safetensors").read_bytes())
    assert outputs[0] == outputs[1]
    config = json.loads((tmp_path / "a" / "scheduler_config.json").read_text())
    assert config["_class_name"] == "FlowMatchKDPM2AncestralDiscreteScheduler"
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["training"]["objective"].startswith("velocity")
    default = train_digits.parse_args(["--flow"]).out_dir
    assert default.parts[-3:] == ("kdpm2", "demo", "digits_flow")
    assert train_digits.parse_args([]).out_dir.parts[-2:] == ("kdpm2", "demo")
