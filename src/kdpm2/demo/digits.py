"""The bundled digits networks: small residual MLPs trained on scikit-learn's 8x8 digits.

Two models share the architecture and this loader, each in its own directory (weights, manifest
and ``scheduler_config.json``):

- ``DEMO_DIR`` (``kdpm2 sample --model digits``): a diffusion model. It predicts the noise ``eps``
  in ``x_t = x_0 + sigma_t * eps`` from the scaled input ``x_t / sqrt(sigma_t**2 + 1)`` and the
  (float) train-time timestep, the interface of a diffusers UNet with ``prediction_type='epsilon'``.
- ``FLOW_DIR`` (``--model digits-flow``): a rectified-flow model. It predicts the velocity
  ``v = eps - x_0`` of ``x_s = (1 - s) * x_0 + s * eps`` from the unscaled ``x_s`` and the
  timestep ``1000 * s``, the interface of a model sampled by diffusers'
  FlowMatchEulerDiscreteScheduler.

Pixels live in ``[-1, 1]`` (``x = pixels / 8 - 1`` for the 0..16 digits data).

The forward pass is written twice, once in NumPy (:func:`forward_numpy`, what ``kdpm2 sample`` uses
by default, so that the demo runs without torch) and once in torch (:func:`forward_torch`, used by
``scripts/train_digits.py`` and ``--backend torch``). torch is imported only inside the torch
functions. The weights ship as ``digits.safetensors`` next to this file; ``manifest.json`` records
their SHA-256 and size, and :func:`read_weights` refuses a file that does not match.

Architecture (``W = width``, ``E = embed_dim``)::

    e = [cos(f * t / 1000), sin(f * t / 1000)]            (B, E), f geometric in [1, 300]
    c = silu(e @ time.w1 + time.b1) @ time.w2 + time.b2   (B, W)
    h = x @ in.w + in.b + c                               (B, W)
    for each block i:
        u = silu(layer_norm(h) @ w1 + b1 + silu(c) @ wt)
        h = h + u @ w2 + b2
    eps = silu(layer_norm(h)) @ out.w + out.b            (B, 64)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEMO_DIR",
    "FLOW_DIR",
    "IMAGE_SHAPE",
    "MANIFEST_PATH",
    "WEIGHTS_PATH",
    "DigitsDenoiser",
    "DigitsNetSpec",
    "WeightsError",
    "file_digest",
    "forward_numpy",
    "forward_torch",
    "init_params",
    "load_digits_denoiser",
    "read_weights",
    "spec_from_params",
    "timestep_embedding",
]

DEMO_DIR = Path(__file__).resolve().parent
WEIGHTS_PATH = DEMO_DIR / "digits.safetensors"
MANIFEST_PATH = DEMO_DIR / "manifest.json"
#: Largest weights file read without a manifest size (the bundled ones are 2.8 MB).
MAX_WEIGHTS_BYTES = 256 * 2**20
FLOW_DIR = DEMO_DIR / "digits_flow"
IMAGE_SHAPE = (8, 8)
NUM_PIXELS = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
# The embedding's timescale: t / 1000 with angular frequencies from 1 to 300, so the fastest
# feature has a period of about 21 train steps and fractional timesteps land between neighbours
# smoothly.
_TIME_SCALE = 1000.0
_MAX_FREQUENCY = 300.0
_LAYER_NORM_EPS = 1e-5
_FIX_HINT = (
    "Reinstall kdpm2, or regenerate the weights with `python scripts/train_digits.py` "
    "(with --flow for digits_flow/) from a source checkout."
)


class WeightsError(RuntimeError):
    """The bundled weights file is missing, truncated, corrupt or does not fit the network."""


@dataclass(frozen=True, slots=True)
class DigitsNetSpec:
    """Shape of the digits network.

    Parameters
    ----------
    width : int
        Hidden width ``W``.
    num_blocks : int
        Number of residual blocks.
    embed_dim : int
        Size ``E`` of the sinusoidal timestep embedding (even).
    """

    width: int = 256
    num_blocks: int = 3
    embed_dim: int = 64

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Return the name and shape of every parameter, in a fixed order.

        Returns
        -------
        dict of str to tuple of int
            Weight matrices are stored ``(in, out)`` so that a layer is ``x @ w + b``.

        Examples
        --------
        >>> shapes = DigitsNetSpec(width=8, num_blocks=1, embed_dim=4).param_shapes()
        >>> shapes["in.w"], shapes["blocks.0.wt"], len(shapes)
        ((64, 8), (8, 8), 17)
        """
        w, e = self.width, self.embed_dim
        shapes: dict[str, tuple[int, ...]] = {
            "time.w1": (e, w),
            "time.b1": (w,),
            "time.w2": (w, w),
            "time.b2": (w,),
            "in.w": (NUM_PIXELS, w),
            "in.b": (w,),
        }
        for i in range(self.num_blocks):
            shapes |= {
                f"blocks.{i}.norm.g": (w,),
                f"blocks.{i}.norm.b": (w,),
                f"blocks.{i}.w1": (w, w),
                f"blocks.{i}.b1": (w,),
                f"blocks.{i}.wt": (w, w),
                f"blocks.{i}.w2": (w, w),
                f"blocks.{i}.b2": (w,),
            }
        shapes |= {
            "out.norm.g": (w,),
            "out.norm.b": (w,),
            "out.w": (w, NUM_PIXELS),
            "out.b": (NUM_PIXELS,),
        }
        return shapes


def init_params(spec: DigitsNetSpec, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draw initial float32 parameters for ``spec``.

    Dense weights are ``N(0, 1/fan_in)``; layer-norm gains start at 1; biases and each block's
    output projection ``w2`` start at 0, so every residual block starts as the identity.

    Parameters
    ----------
    spec : DigitsNetSpec
        Network shape.
    rng : numpy.random.Generator
        Source of the random weights.

    Returns
    -------
    dict of str to numpy.ndarray
        float32 arrays with the shapes of :meth:`DigitsNetSpec.param_shapes`.

    Examples
    --------
    >>> p = init_params(DigitsNetSpec(width=8, num_blocks=1), np.random.default_rng(0))
    >>> p["blocks.0.norm.g"].tolist() == [1.0] * 8, float(abs(p["blocks.0.w2"]).max())
    (True, 0.0)
    """
    params = {}
    for name, shape in spec.param_shapes().items():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "g":
            value = np.ones(shape)
        elif len(shape) == 1 or leaf == "w2":
            value = np.zeros(shape)
        else:
            value = rng.standard_normal(shape) / math.sqrt(shape[0])
        params[name] = value.astype(np.float32)
    return params


def spec_from_params(params: Mapping[str, Any]) -> DigitsNetSpec:
    """Infer the network shape from a parameter mapping and check that every tensor fits it.

    Parameters
    ----------
    params : Mapping
        Parameter name to array (numpy or torch); anything with ``.shape``.

    Returns
    -------
    DigitsNetSpec

    Raises
    ------
    WeightsError
        If a tensor is missing, unexpected, or has the wrong shape.

    Examples
    --------
    >>> spec = DigitsNetSpec(width=8, num_blocks=2, embed_dim=4)
    >>> spec_from_params(init_params(spec, np.random.default_rng(0))) == spec
    True
    """
    try:
        width = int(params["in.w"].shape[1])
        embed_dim = int(params["time.w1"].shape[0])
    except (KeyError, IndexError) as exc:
        raise WeightsError(
            f"the digits weights lack a well-formed {exc} tensor; got tensors {sorted(params)}."
        ) from None
    num_blocks = sum(1 for name in params if name.startswith("blocks.") and name.endswith(".w1"))
    spec = DigitsNetSpec(width=width, num_blocks=num_blocks, embed_dim=embed_dim)
    expected = spec.param_shapes()
    missing = sorted(set(expected) - set(params))
    unexpected = sorted(set(params) - set(expected))
    if missing or unexpected:
        raise WeightsError(
            f"the digits weights do not fit the network: missing {missing}, unexpected "
            f"{unexpected}. {_FIX_HINT}"
        )
    for name, shape in expected.items():
        got = tuple(params[name].shape)
        if got != shape:
            raise WeightsError(
                f"the digits weight {name!r} has shape {got}, expected {shape}. {_FIX_HINT}"
            )
    return spec


def timestep_embedding(timestep: Any, batch_size: int, embed_dim: int) -> np.ndarray:
    """Return the sinusoidal embedding of (possibly fractional) train-time timesteps.

    Computed in float64 and rounded once to float32, so the NumPy and torch forward passes see
    the same numbers.

    Parameters
    ----------
    timestep : float, numpy.ndarray or torch.Tensor
        A scalar, or shape ``(batch_size,)``; train-time index in ``[0, 1000)``.
    batch_size : int
        Rows ``B`` of the output; a scalar timestep is repeated.
    embed_dim : int
        Even embedding size ``E``.

    Returns
    -------
    numpy.ndarray
        float32 array of shape ``(B, E)``: cosines then sines.

    Examples
    --------
    >>> timestep_embedding(0.0, 2, 4).tolist()
    [[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]]
    """
    if hasattr(timestep, "detach"):  # a torch tensor; reading it needs no torch import here
        timestep = timestep.detach().cpu().double().numpy()
    t = np.broadcast_to(np.asarray(timestep, dtype=np.float64).reshape(-1), (batch_size,))
    half = embed_dim // 2
    freqs = np.geomspace(1.0, _MAX_FREQUENCY, half)
    angles = (t / _TIME_SCALE)[:, None] * freqs[None, :]
    return np.concatenate([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)


def _silu(x: np.ndarray) -> np.ndarray:
    # sigmoid(x) = (1 + tanh(x / 2)) / 2 cannot overflow, unlike 1 / (1 + exp(-x)).
    return x * (0.5 + 0.5 * np.tanh(0.5 * x))


def _layer_norm(x: np.ndarray, gain: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    var = (centred * centred).mean(axis=-1, keepdims=True)
    return centred / np.sqrt(var + np.float32(_LAYER_NORM_EPS)) * gain + bias


def forward_numpy(
    params: Mapping[str, np.ndarray], sample: np.ndarray, timestep: Any
) -> np.ndarray:
    """Predict the noise in ``sample`` with NumPy (float32).

    Parameters
    ----------
    params : Mapping of str to numpy.ndarray
        float32 weights, as from :func:`read_weights`.
    sample : numpy.ndarray
        Scaled noisy digits ``x_t / sqrt(sigma_t**2 + 1)``, shape ``(B, 64)``.
    timestep : float or array_like
        Scalar or shape ``(B,)``.

    Returns
    -------
    numpy.ndarray
        Predicted ``eps``, float32, shape ``(B, 64)``.

    Examples
    --------
    >>> p = init_params(DigitsNetSpec(width=8, num_blocks=1), np.random.default_rng(0))
    >>> forward_numpy(p, np.zeros((3, 64), np.float32), 10.5).shape
    (3, 64)
    """
    num_blocks = sum(1 for name in params if name.endswith(".w1") and name.startswith("blocks."))
    x = np.asarray(sample, dtype=np.float32)
    emb = timestep_embedding(timestep, x.shape[0], params["time.w1"].shape[0])
    c = _silu(emb @ params["time.w1"] + params["time.b1"]) @ params["time.w2"] + params["time.b2"]
    silu_c = _silu(c)
    h = x @ params["in.w"] + params["in.b"] + c
    for i in range(num_blocks):
        p = f"blocks.{i}."
        u = _layer_norm(h, params[p + "norm.g"], params[p + "norm.b"])
        u = _silu(u @ params[p + "w1"] + params[p + "b1"] + silu_c @ params[p + "wt"])
        h = h + u @ params[p + "w2"] + params[p + "b2"]
    h = _silu(_layer_norm(h, params["out.norm.g"], params["out.norm.b"]))
    return h @ params["out.w"] + params["out.b"]


def forward_torch(
    params: Mapping[str, torch.Tensor], sample: torch.Tensor, timestep: Any
) -> torch.Tensor:
    """Predict the noise in ``sample`` with torch; the same network as :func:`forward_numpy`.

    Differentiable in ``params``, which is how ``scripts/train_digits.py`` trains it.

    Parameters
    ----------
    params : Mapping of str to torch.Tensor
        float32 weights on the device of ``sample``.
    sample : torch.Tensor
        Scaled noisy digits, shape ``(B, 64)``.
    timestep : float, numpy.ndarray or torch.Tensor
        Scalar or shape ``(B,)``.

    Returns
    -------
    torch.Tensor
        Predicted ``eps``, shape ``(B, 64)``, dtype float32.
    """
    import torch
    import torch.nn.functional as F

    num_blocks = sum(1 for name in params if name.endswith(".w1") and name.startswith("blocks."))
    width = params["in.w"].shape[1]
    emb_np = timestep_embedding(timestep, sample.shape[0], params["time.w1"].shape[0])
    emb = torch.from_numpy(emb_np).to(sample.device)
    x = sample.to(torch.float32)
    c = F.silu(emb @ params["time.w1"] + params["time.b1"]) @ params["time.w2"] + params["time.b2"]
    silu_c = F.silu(c)
    h = x @ params["in.w"] + params["in.b"] + c
    for i in range(num_blocks):
        p = f"blocks.{i}."
        u = F.layer_norm(h, (width,), params[p + "norm.g"], params[p + "norm.b"], _LAYER_NORM_EPS)
        u = F.silu(u @ params[p + "w1"] + params[p + "b1"] + silu_c @ params[p + "wt"])
        h = h + u @ params[p + "w2"] + params[p + "b2"]
    h = F.layer_norm(h, (width,), params["out.norm.g"], params["out.norm.b"], _LAYER_NORM_EPS)
    return F.silu(h) @ params["out.w"] + params["out.b"]


def file_digest(path: str | os.PathLike[str]) -> tuple[str, int]:
    """Return the SHA-256 hex digest and the size in bytes of a file.

    Parameters
    ----------
    path : str or os.PathLike
        File to hash.

    Returns
    -------
    tuple of (str, int)
    """
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _expected_digest(manifest_path: Path, weights_name: str) -> tuple[str, int]:
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        entry = manifest["files"][weights_name]
        return str(entry["sha256"]), int(entry["size"])
    except FileNotFoundError:
        raise WeightsError(
            f"the weights manifest {manifest_path} is missing, so {weights_name} cannot be "
            f"verified. {_FIX_HINT}"
        ) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise WeightsError(
            f"the weights manifest {manifest_path} is unreadable or has no sha256/size entry "
            f"for {weights_name} ({type(exc).__name__}: {exc}). {_FIX_HINT}"
        ) from None


def read_weights(
    path: str | os.PathLike[str] | None = None,
    *,
    manifest_path: str | os.PathLike[str] | None = None,
    verify: bool = True,
) -> dict[str, np.ndarray]:
    """Read the digits weights as float32 NumPy arrays, checking their integrity first.

    Uses ``safetensors.numpy``, so no torch is needed.

    Parameters
    ----------
    path : str or os.PathLike, optional
        A ``.safetensors`` file; default: the bundled ``digits.safetensors``.
    manifest_path : str or os.PathLike, optional
        JSON with ``{"files": {name: {"sha256": ..., "size": ...}}}``; default: the
        ``manifest.json`` beside ``path``.
    verify : bool, default True
        Compare size and SHA-256 against the manifest before parsing.

    Returns
    -------
    dict of str to numpy.ndarray

    Raises
    ------
    WeightsError
        If the file is missing, its size or hash differs from the manifest, it cannot be parsed,
        or its tensors do not fit the network. The message names the file and how to fix it.
    ModuleNotFoundError
        If ``safetensors`` is not installed.

    Examples
    --------
    >>> params = read_weights()
    >>> params["in.w"].dtype, params["in.w"].shape[0]
    (dtype('float32'), 64)
    """
    path = WEIGHTS_PATH if path is None else Path(path)
    manifest_path = path.parent / MANIFEST_PATH.name if manifest_path is None else manifest_path
    try:
        info = path.stat()
    except FileNotFoundError:
        raise WeightsError(f"the digits weights file {path} is missing. {_FIX_HINT}") from None
    if not stat.S_ISREG(info.st_mode):
        raise WeightsError(
            f"the digits weights file {path} is not a regular file (a device, pipe or folder); "
            f"{_FIX_HINT}"
        )
    sha256, size = _expected_digest(Path(manifest_path), path.name) if verify else ("", -1)
    limit = size if verify else MAX_WEIGHTS_BYTES
    if info.st_size > limit:
        raise WeightsError(
            f"the digits weights file {path} is longer than expected: {info.st_size} bytes, "
            f"expected {'at most ' if not verify else ''}{limit}. {_FIX_HINT}"
        )
    with open(path, "rb") as f:
        data = f.read(limit + 1)  # never more than the expected size, even if the file grows
    if verify:
        if len(data) != size:
            what = "truncated" if len(data) < size else "longer than expected"
            raise WeightsError(
                f"the digits weights file {path} is {what}: {len(data)} bytes, expected {size}. "
                f"{_FIX_HINT}"
            )
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise WeightsError(
                f"the digits weights file {path} is corrupt: SHA-256 {actual[:16]}..., expected "
                f"{sha256[:16]}... {_FIX_HINT}"
            )
    try:
        from safetensors.numpy import load
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "reading the digits weights needs the 'safetensors' package; install it with "
            "`pip install 'kdpm2[cli]'`."
        ) from exc
    try:
        params = load(data)
    except Exception as exc:  # safetensors raises its own SafetensorError for bad headers
        raise WeightsError(
            f"the digits weights file {path} cannot be parsed as safetensors "
            f"({type(exc).__name__}: {exc}). {_FIX_HINT}"
        ) from None
    spec_from_params(params)
    bad = sorted(name for name, value in params.items() if value.dtype != np.float32)
    if bad:
        raise WeightsError(f"the digits weights {bad} in {path} are not float32. {_FIX_HINT}")
    return params


class DigitsDenoiser:
    """Digits network, callable as ``model(sample, timestep) -> eps`` (or velocity).

    What it predicts is what its weights were trained for: ``eps`` for the weights in
    ``DEMO_DIR``, the velocity ``eps - x_0`` for those in ``FLOW_DIR`` (see the module docstring).

    Parameters
    ----------
    params : Mapping of str to numpy.ndarray
        float32 weights, as from :func:`read_weights`.
    backend : {'numpy', 'torch'}, default 'numpy'
        ``'numpy'`` takes and returns float32 NumPy arrays; ``'torch'`` takes and returns torch
        tensors (the weights are moved to the sample's device on first use).

    Examples
    --------
    >>> model = load_digits_denoiser()
    >>> model(np.zeros((2, 64), np.float32), 999.0).shape
    (2, 64)
    """

    def __init__(
        self, params: Mapping[str, np.ndarray], backend: Literal["numpy", "torch"] = "numpy"
    ):
        if backend not in ("numpy", "torch"):
            raise ValueError(f"backend={backend!r} is not supported; expected 'numpy' or 'torch'.")
        self.spec = spec_from_params(params)
        self.backend = backend
        self._params = dict(params)
        self._torch_params: dict[Any, dict[str, Any]] = {}

    def __call__(self, sample: Any, timestep: Any) -> Any:
        """Return the prediction (``eps`` or velocity), with the type and shape of ``sample``.

        Parameters
        ----------
        sample : numpy.ndarray or torch.Tensor
            Noisy digits of shape ``(B, 64)`` or ``(B, 8, 8)``, as the scheduler's
            ``scale_model_input`` returns them.
        timestep : float or array_like
            Train-time timestep, scalar or shape ``(B,)``; fractional values are fine.

        Returns
        -------
        numpy.ndarray or torch.Tensor
            float32 prediction of the same shape as ``sample``.
        """
        flat = sample.reshape(sample.shape[0], NUM_PIXELS)
        if self.backend == "numpy":
            return forward_numpy(self._params, flat, timestep).reshape(sample.shape)
        params = self._torch_params.get(sample.device)
        if params is None:
            import torch

            params = {k: torch.from_numpy(v).to(sample.device) for k, v in self._params.items()}
            self._torch_params[sample.device] = params
        return forward_torch(params, flat, timestep).reshape(sample.shape)


def load_digits_denoiser(
    backend: Literal["numpy", "torch"] = "numpy",
    *,
    path: str | os.PathLike[str] | None = None,
    model_dir: str | os.PathLike[str] | None = None,
) -> DigitsDenoiser:
    """Load a bundled digits network, verifying the weights file.

    Parameters
    ----------
    backend : {'numpy', 'torch'}, default 'numpy'
        Array type the returned model works on.
    path : str or os.PathLike, optional
        Weights file; default: ``digits.safetensors`` in ``model_dir``.
    model_dir : str or os.PathLike, optional
        Directory holding ``digits.safetensors`` and its ``manifest.json``: ``DEMO_DIR`` (the
        default, the eps-prediction model) or ``FLOW_DIR`` (the velocity model). Give ``path`` or
        ``model_dir``, not both.

    Returns
    -------
    DigitsDenoiser

    Raises
    ------
    WeightsError
        See :func:`read_weights`.
    TypeError
        If both ``path`` and ``model_dir`` are given.

    Examples
    --------
    >>> model = load_digits_denoiser("numpy", model_dir=FLOW_DIR)
    >>> model(np.zeros((2, 64), np.float32), 1000.0).shape
    (2, 64)
    """
    if path is not None and model_dir is not None:
        raise TypeError(
            f"load_digits_denoiser() got path={str(path)!r} and model_dir={str(model_dir)!r}; "
            "give one of them (model_dir reads its digits.safetensors)."
        )
    if model_dir is not None:
        path = Path(model_dir) / WEIGHTS_PATH.name
    return DigitsDenoiser(read_weights(path), backend=backend)
