"""Run the README's code blocks as written (collected by the root conftest.py through Sybil).

Names a block leaves to the reader are supplied here, small and offline: ``my_onnx_unet`` (a
NumPy epsilon model), ``denoiser`` and ``noise`` (k-diffusion style), ``net`` (a velocity
network), and a tiny random-weight Stable Diffusion pipeline saved at
``path/to/local/model`` in the folder the blocks run in. Bash blocks run their ``kdpm2`` and
``python -m kdpm2`` lines there. A block that cannot run offline says why in the README, in
the ``<!-- skip: next "..." -->`` comment above it.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from tests.conftest import one_process_env


def _has(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


def setup(namespace: dict[str, Any]) -> None:
    """Give the README's blocks a folder of their own and the names they leave to the reader."""
    folder = Path(tempfile.mkdtemp(prefix="kdpm2-readme-"))
    namespace["_previous_cwd"] = os.getcwd()
    os.chdir(folder)
    rng = np.random.default_rng(0)
    namespace["HAVE_PIPELINES"] = _has("torch", "diffusers", "transformers")
    namespace["my_onnx_unet"] = lambda x, t: np.tanh(x) * np.float32(0.1)
    namespace["noise"] = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
    namespace["denoiser"] = lambda x, sigma: x / (1 + sigma.reshape(-1, 1, 1, 1) ** 2)
    namespace["net"] = lambda x, t: x * 0.1
    if namespace["HAVE_PIPELINES"]:
        from tests.test_pipelines import _pipe, tiny_components

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _pipe(tiny_components()).save_pretrained(folder / "path/to/local/model")


def teardown(namespace: dict[str, Any]) -> None:
    """Go back to the folder the tests started in."""
    os.chdir(namespace["_previous_cwd"])


def run_bash(example: Any) -> None:
    """Run the ``kdpm2`` lines of a bash block, each one as a user would, and check they pass."""
    env = one_process_env()
    for line in str(example.parsed).replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["kdpm2"]:
            words = [sys.executable, "-m", "kdpm2", *words[1:]]
        elif words[:1] == ["python"]:
            words = [sys.executable, *words[1:]]
        else:
            continue
        if "torch" in words and not _has("torch"):  # --backend torch: the torch extra
            continue
        result = subprocess.run(words, capture_output=True, text=True, env=env, check=False)
        assert result.returncode == 0, f"{line}\n{result.stderr[-2000:]}"
