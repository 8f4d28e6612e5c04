"""examples/diffusers_torchrun.py: a diffusers pipeline with kdpm2's scheduler under torchrun.

A tiny random-weight Stable Diffusion pipeline (built offline, saved to a folder) draws five
prompts on one process and on two (gloo, loopback only); the images must be the same bits.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import one_process_env, require_reference

torch = pytest.importorskip("torch")
diffusers = require_reference("diffusers")
require_reference("transformers")

from tests.test_pipelines import SD_SCHEDULER, tiny_components  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "diffusers_torchrun.py"
PROMPTS = ["a cat", "a dog", "a red house", "the sea at night", "two birds"]


def _env():
    # the user's environment: the thread count is left as it is (torchrun sets its own)
    return one_process_env(MASTER_ADDR="127.0.0.1", GLOO_SOCKET_IFNAME="lo")


def test_example_gives_the_same_images_on_one_process_and_on_two(tmp_path):
    """If this fails, the example as the README runs it (in an empty folder, `--out images/`
    not yet there, the default thread count) fails, or its images depend on the number of
    processes: a prompt got another generator or sat in another batch, torch's thread count
    changed the sums, the gather lost the order, or it wrote twice."""
    pipe = diffusers.StableDiffusionPipeline(
        **tiny_components(),
        scheduler=diffusers.PNDMScheduler.from_config(SD_SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe.save_pretrained(tmp_path / "pipe")
    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    args = [
        "--model", tmp_path / "pipe", "--prompts", tmp_path / "prompts.txt", "--steps", 3,
        "--height", 32, "--width", 32, "--seed", 9, "--batch-size", 2,
    ]  # fmt: skip
    runs = {}
    for name, launcher in (
        ("one", [sys.executable]),
        ("two", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                 "--nproc-per-node", "2"]),
    ):  # fmt: skip
        cwd = tmp_path / name
        cwd.mkdir()
        out = cwd / "images"
        result = subprocess.run(
            [*launcher, str(EXAMPLE), *map(str, args), "--out", "images/"],
            capture_output=True, text=True, env=_env(), timeout=600, check=False, cwd=cwd,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.count("wrote 5 images") == 1, result.stdout
        runs[name] = np.load(out / "images.npy")
        expected_files = [f"{i:04d}.png" for i in range(5)] + ["images.npy"]
        assert expected_files == sorted(p.name for p in out.iterdir())
    assert runs["one"].shape == (5, 32, 32, 3)
    np.testing.assert_array_equal(runs["one"], runs["two"])
    # the prompts and seeds differ, so the images do: a broken split cannot pass by accident
    assert np.abs(runs["one"][0] - runs["one"][1]).max() > 0.05


def test_example_stops_before_any_work_when_the_output_folder_cannot_be_made(tmp_path):
    """If this fails, an output folder that cannot be created is found only after all the
    sampling (or with a traceback) instead of one line and exit code 2 before any work."""
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "p.txt").write_text("a cat\n")
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--model", "no-such-pipeline", "--prompts", "p.txt",
         "--out", str(tmp_path / "file" / "images")],
        capture_output=True, text=True, env=_env(), timeout=120, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert [f"error: --out {tmp_path / 'file' / 'images'}: cannot create the folder"] == [
        line.split(": [")[0] for line in result.stderr.splitlines()
    ], result.stderr
