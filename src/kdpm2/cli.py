"""Command line: ``kdpm2 sample`` draws images with the bundled demo models.

``kdpm2 sample`` with no options samples a grid of 8x8 digits from the bundled network with 20
KDPM2-ancestral steps and writes ``kdpm2-samples.png``. ``--model digits-flow`` samples the bundled
rectified-flow digits network with the flow-matching variant of the sampler. ``--model gmm``
samples a 2-D Gaussian mixture through its exact denoiser instead and draws the points over the
true density. Everything runs in NumPy unless ``--backend torch`` is given.

Sample ``k`` is drawn with its own generator, seeded with :func:`kdpm2.noise.sample_seed` of
``(seed, k)``, and computed in block ``k // 256`` at row ``k % 256``: every model call sees a
whole block (``BLOCK`` rows; a partial block is padded) and runs on one thread of the math
library, the blocks of a batch side by side on a pool of threads (:mod:`kdpm2._blocks`). So a
sample's bits do not depend on ``--num-samples``, ``--batch-size``, the number of threads or
the number of processes. Under torch.distributed's
launcher (``torchrun ... -m kdpm2 sample``) the processes split the blocks, rank 0 gathers and
writes (:mod:`kdpm2._distributed`).

Parsing (:func:`parse_args`), building the model and scheduler (:func:`build_model`,
:func:`build_scheduler`), sampling (:func:`sample`) and writing (:func:`write_outputs`) are separate
functions; :func:`main` strings them together and turns user errors into one line on stderr and
exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn

import numpy as np

from kdpm2._blocks import BLOCK, block_runner
from kdpm2._distributed import Launch, PeerLostError, launch_from_env, record_error, shard
from kdpm2._io import check_writable, write_files_atomic
from kdpm2._version import __version__
from kdpm2.demo.digits import DEMO_DIR, FLOW_DIR, IMAGE_SHAPE, WeightsError, load_digits_denoiser
from kdpm2.demo.gmm import GaussianMixture2D, GMMDenoiser, default_mixture

__all__ = [
    "SampleOptions",
    "UsageError",
    "build_model",
    "build_scheduler",
    "main",
    "parse_args",
    "render",
    "sample",
    "write_outputs",
]

PROG = "kdpm2"
MAX_STEPS = 1000
MAX_SAMPLES = 100_000
MAX_SEED = 2**64 - 1  # what a torch.Generator takes; NumPy takes the same range here
DEFAULT_BATCH_SIZE = 1024
#: Seconds a process of a shared run waits for the others (torch's own default is 30 minutes).
DEFAULT_TIMEOUT = 300.0
MAX_TIMEOUT = 86_400.0
#: Fewest steps at which the digits pass the README's quality check, per sigma spacing
#: (``scripts/quality_table.py``: default spacing passes at 20, Karras at 10).
QUALITY_STEPS = {"default": 20, "karras": 10}
#: The same for ``--model digits-flow`` (both spacings pass at 10).
FLOW_QUALITY_STEPS = {"default": 10, "karras": 10}
DEFAULT_OUT = Path("kdpm2-samples.png")
DEFAULT_NUM_SAMPLES = {"digits": 64, "digits-flow": 64, "gmm": 1000}
SAMPLE_SHAPE = {
    "digits": (IMAGE_SHAPE[0] * IMAGE_SHAPE[1],),
    "digits-flow": (IMAGE_SHAPE[0] * IMAGE_SHAPE[1],),
    "gmm": (2,),
}
#: Digits drawn in the PNG at most (the first ones; a 64 x 64 grid, 3202 pixels square): the
#: picture of 100000 digits would take 250 MB and show nothing more.
MAX_PICTURE_DIGITS = 4096
_DIGIT_SCALE = 6  # screen pixels per digit pixel
_DIGIT_GAP = 2
_PLOT_SIZE = 360
_PLOT_EXTENT = 3.2  # the scatter plot shows [-extent, extent]^2


class UsageError(Exception):
    """A bad command line; :func:`main` prints it on one line and exits with code 2."""


@dataclass(frozen=True, slots=True)
class SampleOptions:
    """Validated options of ``kdpm2 sample``.

    Attributes
    ----------
    model : {'digits', 'digits-flow', 'gmm'}
        Bundled digits network (diffusion or rectified flow) or the exact 2-D Gaussian mixture
        denoiser.
    num_samples : int
        Number of samples ``N``.
    steps : int
        Sampler steps ``n`` (``2n - 1`` model calls).
    seed : int
        Seed of the initial noise and of the ancestral noise.
    eta : float
        Ancestral noise scale (0 = deterministic DPM-2, 1 = the default ancestral sampler).
    karras : bool
        Use the Karras et al. (2022) sigma spacing.
    out : pathlib.Path
        PNG destination.
    npy : pathlib.Path or None
        Optional destination of the raw samples.
    backend : {'numpy', 'torch'}
        Array library for the model and the scheduler.
    quiet : bool
        No progress bar and no summary line.
    batch_size : int
        Samples per sampling loop (bounds memory); the samples do not depend on it.
    device : {'cpu', 'cuda'}
        Where torch computes (``--backend torch`` only).
    timeout : float
        Seconds a process of a shared run waits for the others, at the start and at each
        meeting point, before it gives up with an error.
    """

    model: Literal["digits", "digits-flow", "gmm"] = "digits"
    num_samples: int = 64
    steps: int = 20
    seed: int = 0
    eta: float = 1.0
    karras: bool = False
    out: Path = DEFAULT_OUT
    npy: Path | None = None
    backend: Literal["numpy", "torch"] = "numpy"
    quiet: bool = False
    batch_size: int = DEFAULT_BATCH_SIZE
    device: Literal["cpu", "cuda"] = "cpu"
    timeout: float = DEFAULT_TIMEOUT


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="KDPM2 ancestral (DPM2 a) sampler demo.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub = commands.add_parser(
        "sample",
        help="draw samples from a bundled demo model and write a PNG",
        description="Draw samples with the KDPM2 ancestral sampler from a bundled demo model.",
    )
    sub.add_argument(
        "--model",
        choices=("digits", "digits-flow", "gmm"),
        default="digits",
        help="digits: the bundled 8x8 digits network (default); digits-flow: its rectified-flow "
        "twin, sampled with the flow-matching scheduler; gmm: a 2-D Gaussian mixture with its "
        "exact denoiser, drawn over the true density",
    )
    sub.add_argument(
        "--num-samples",
        type=int,
        metavar="N",
        help=f"number of samples, 1 to {MAX_SAMPLES} (default: "
        f"{DEFAULT_NUM_SAMPLES['digits']} digits, {DEFAULT_NUM_SAMPLES['gmm']} gmm points)",
    )
    sub.add_argument(
        "--steps",
        type=int,
        default=20,
        help=f"sampler steps, 1 to {MAX_STEPS} (default: 20; digits need about "
        f"{QUALITY_STEPS['default']}, or {QUALITY_STEPS['karras']} with --karras; digits-flow "
        f"about {FLOW_QUALITY_STEPS['default']})",
    )
    sub.add_argument("--seed", type=int, default=0, help="random seed, 0 to 2**64 - 1 (default: 0)")
    sub.add_argument(
        "--eta",
        type=float,
        default=1.0,
        help="ancestral noise, 0 (deterministic DPM2) to 1 (default: 1.0)",
    )
    sub.add_argument("--karras", action="store_true", help="use Karras sigmas")
    sub.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        metavar="PATH.png",
        help=f"where to write the picture (default: {DEFAULT_OUT}); it shows the first "
        f"{MAX_PICTURE_DIGITS} digits (--npy keeps every sample)",
    )
    sub.add_argument("--npy", type=Path, metavar="PATH.npy", help="also write the raw samples")
    sub.add_argument(
        "--backend",
        choices=("numpy", "torch"),
        default="numpy",
        help="array library for model and scheduler (default: numpy)",
    )
    sub.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="where --backend torch computes (default: cpu); under torchrun each process uses "
        "cuda:LOCAL_RANK",
    )
    sub.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        metavar="B",
        help=f"samples per sampling loop, 1 to {MAX_SAMPLES}, to bound memory; the samples do "
        f"not depend on it; multiples of {BLOCK} waste no work (default: {DEFAULT_BATCH_SIZE})",
    )
    sub.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="under torchrun: how long a process waits for the others to start and at each "
        f"meeting point before it stops with an error (default: {DEFAULT_TIMEOUT:g})",
    )
    sub.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bar and no summary line"
    )
    return parser


def _check_suffix(option: str, path: Path, suffix: str) -> None:
    if path.suffix.lower() != suffix:
        raise UsageError(f"{option} {str(path)!r} must end in {suffix}.")


def _check_output_path(option: str, path: Path) -> None:
    problem = check_writable(path)
    if problem is not None:
        raise UsageError(f"{option} {str(path)!r}: {problem}.")


def parse_args(argv: Sequence[str] | None = None) -> SampleOptions:
    """Parse and validate the command line.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; default ``sys.argv[1:]``.

    Returns
    -------
    SampleOptions

    Raises
    ------
    UsageError
        For an unknown option, a value out of range or a wrong file suffix (the output
        directories are checked by :func:`check_outputs`, on the process that writes).
    SystemExit
        With code 0, after printing ``--help``.

    Examples
    --------
    >>> parse_args(["sample", "--model", "gmm", "--steps", "5"]).num_samples
    1000
    >>> parse_args(["sample", "--steps", "0"])
    Traceback (most recent call last):
    ...
    kdpm2.cli.UsageError: --steps must be between 1 and 1000, got 0.
    """
    ns = _build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    num_samples = DEFAULT_NUM_SAMPLES[ns.model] if ns.num_samples is None else ns.num_samples
    if not 1 <= num_samples <= MAX_SAMPLES:
        raise UsageError(f"--num-samples must be between 1 and {MAX_SAMPLES}, got {num_samples}.")
    if not 1 <= ns.steps <= MAX_STEPS:
        raise UsageError(f"--steps must be between 1 and {MAX_STEPS}, got {ns.steps}.")
    if not 0.0 <= ns.eta <= 1.0:  # also rejects nan
        raise UsageError(f"--eta must be between 0 and 1, got {ns.eta}.")
    if not 0 <= ns.seed <= MAX_SEED:
        raise UsageError(f"--seed must be between 0 and 2**64 - 1, got {ns.seed}.")
    if not 1 <= ns.batch_size <= MAX_SAMPLES:
        raise UsageError(
            f"--batch-size must be between 1 and {MAX_SAMPLES}, got {ns.batch_size}; it only "
            f"bounds memory, so any value gives the same samples (multiples of {BLOCK} are "
            "fastest)."
        )
    if not 1.0 <= ns.timeout <= MAX_TIMEOUT:  # also rejects nan
        raise UsageError(
            f"--timeout must be between 1 and {MAX_TIMEOUT:g} seconds, got {ns.timeout}."
        )
    if ns.device == "cuda" and ns.backend != "torch":
        raise UsageError("--device cuda needs --backend torch; add --backend torch.")
    _check_suffix("--out", ns.out, ".png")
    if ns.npy is not None:
        _check_suffix("--npy", ns.npy, ".npy")
    return SampleOptions(
        model=ns.model,
        num_samples=num_samples,
        steps=ns.steps,
        seed=ns.seed,
        eta=ns.eta,
        karras=ns.karras,
        out=ns.out,
        npy=ns.npy,
        backend=ns.backend,
        quiet=ns.quiet,
        batch_size=ns.batch_size,
        device=ns.device,
        timeout=ns.timeout,
    )


def check_outputs(options: SampleOptions) -> None:
    """Raise :class:`UsageError` if ``--out`` or ``--npy`` cannot be written (before any work).

    Only the process that writes checks: on several machines, the other machines need not have
    the output directory.
    """
    _check_output_path("--out", options.out)
    if options.npy is not None:
        _check_output_path("--npy", options.npy)


def _require_torch() -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise UsageError(
            "--backend torch needs torch, which is not installed; install it with "
            "`pip install 'kdpm2[torch]'` or use --backend numpy."
        ) from None


def _require_cuda(options: SampleOptions) -> None:
    if options.device != "cuda":
        return
    import torch

    if not torch.cuda.is_available():
        raise UsageError(
            "--device cuda: torch finds no CUDA device here (torch.cuda.is_available() is "
            "False); use --device cpu, or a CUDA build of torch on a machine with a GPU."
        )


def check_installed(options: SampleOptions, *, writer: bool = True) -> None:
    """Raise :class:`UsageError` before any work if an optional package the run needs is missing.

    Pillow writes the PNG (on the process that writes); safetensors reads the bundled digits
    weights; threadpoolctl holds NumPy's BLAS to one thread per model call; torch runs
    ``--backend torch``; ``--device cuda`` needs a CUDA device.
    """
    if options.backend == "torch":
        _require_torch()
    _require_cuda(options)
    needs = [("PIL", "Pillow", "writing the PNG")] if writer else []
    if options.model != "gmm":
        needs.append(("safetensors", "safetensors", "reading the bundled digits weights"))
    if options.backend == "numpy":
        needs.append(("threadpoolctl", "threadpoolctl", "fixing the BLAS thread count"))
    for module, package, why in needs:
        if importlib.util.find_spec(module) is None:
            raise UsageError(
                f"{package} is not installed but is needed for {why}; install it with "
                "`pip install 'kdpm2[cli]'`."
            )


def few_steps_warning(options: SampleOptions) -> str | None:
    """Return a one-line warning when ``--steps`` is below where the digits look like digits."""
    if options.model == "gmm":
        return None
    table = FLOW_QUALITY_STEPS if options.model == "digits-flow" else QUALITY_STEPS
    enough = table["karras" if options.karras else "default"]
    if options.steps >= enough:
        return None
    fewer = table["karras"] < enough
    hint = f" (or {table['karras']} with --karras)" if fewer else ""
    return (
        f"warning: {options.steps} steps is below the {enough}{hint} at which the digits pass "
        "the README's quality check; DPM2 a adds fresh noise at every step, so with few steps "
        "expect noisy, saturated samples."
    )


def build_model(options: SampleOptions) -> Callable[[Any, Any], Any]:
    """Return the model ``model(scaled_sample, timestep)`` that ``options`` names.

    It returns ``eps`` for ``digits`` and ``gmm``, the velocity for ``digits-flow``.

    Parameters
    ----------
    options : SampleOptions

    Returns
    -------
    callable
        :class:`~kdpm2.demo.digits.DigitsDenoiser` or :class:`~kdpm2.demo.gmm.GMMDenoiser`.

    Raises
    ------
    UsageError
        If ``--backend torch`` is asked for and torch is missing.
    kdpm2.demo.WeightsError
        If the bundled digits weights are missing or damaged.
    """
    if options.backend == "torch":
        _require_torch()
    if options.model == "gmm":
        return GMMDenoiser()
    if options.model == "digits-flow":
        return load_digits_denoiser(options.backend, model_dir=FLOW_DIR)
    return load_digits_denoiser(options.backend)


def build_scheduler(options: SampleOptions) -> Any:
    """Return a KDPM2 ancestral scheduler set up for ``options.steps`` steps.

    The config is the model's bundled ``scheduler_config.json`` (the forward process the network
    was trained with), with ``eta`` and ``use_karras_sigmas`` from the options. ``digits-flow``
    gets the flow-matching variant; ``digits`` and ``gmm`` the diffusion one.

    Parameters
    ----------
    options : SampleOptions

    Returns
    -------
    kdpm2.KDPM2AncestralDiscreteScheduler or kdpm2.FlowMatchKDPM2AncestralDiscreteScheduler
    """
    # kdpm2's own classes, not the diffusers-backed ones: the same numbers, and the command
    # does not import diffusers (and with it torch) for a NumPy run.
    if options.model == "digits-flow":
        from kdpm2.flow import FlowMatchKDPM2AncestralDiscreteScheduler

        scheduler: Any = FlowMatchKDPM2AncestralDiscreteScheduler.from_pretrained(
            FLOW_DIR, eta=options.eta, use_karras_sigmas=options.karras
        )
    else:
        from kdpm2.scheduler import KDPM2AncestralDiscreteScheduler

        scheduler = KDPM2AncestralDiscreteScheduler.from_pretrained(
            DEMO_DIR, eta=options.eta, use_karras_sigmas=options.karras
        )
    scheduler.set_timesteps(options.steps)
    return scheduler


class _FallbackBar:
    def __init__(self, total: int):
        self.total, self.done, self.start = total, 0, time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.done += n
        rate = self.done / max(time.perf_counter() - self.start, 1e-9)
        sys.stderr.write(f"\rsampling {self.done}/{self.total} steps, {rate:.1f} steps/s")
        if self.done >= self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    def close(self) -> None:
        pass


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return _FallbackBar(total)
    return tqdm(total=total, desc="sampling", unit="step", file=sys.stderr, leave=False)


def sample(
    model: Callable[[Any, Any], Any],
    scheduler: Any,
    *,
    num_samples: int,
    sample_shape: tuple[int, ...],
    seed: int,
    backend: Literal["numpy", "torch"] = "numpy",
    progress: bool = False,
    first_index: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str = "cpu",
) -> np.ndarray:
    """Run the KDPM2 ancestral sampling loop and return the final samples.

    Samples ``first_index .. first_index + num_samples - 1`` of the run are drawn in batches of
    ``batch_size``: ``x = init_noise_sigma * randn``; then, for each ``t`` in
    ``scheduler.timesteps``, ``x = step(model(scale_model_input(x, t), t), t, x)``. Sample ``k``
    has its own generator, seeded with :func:`kdpm2.noise.sample_seed` ``(seed, k)`` (a
    ``numpy.random.Generator`` for NumPy, a CPU ``torch.Generator`` for torch), for its initial
    and its ancestral noise; the model sees it at row ``k % BLOCK`` of a ``BLOCK``-row call
    that runs on one thread of the math library (:func:`kdpm2._blocks.block_runner`: for the
    length of the call NumPy's BLAS, or torch's intra-op pool, is limited to one thread, and
    the blocks run on a pool of as many threads as it had). So sample ``k`` is the same, bit for
    bit, whatever ``num_samples``, ``first_index`` (as long as the range holds ``k``),
    ``batch_size`` and the thread count. The two backends draw different numbers.

    Parameters
    ----------
    model : callable
        ``model(scaled_sample, timestep) -> output`` on the backend's arrays: ``eps`` for the
        diffusion scheduler, the velocity for the flow one.
    scheduler : KDPM2AncestralDiscreteScheduler or FlowMatchKDPM2AncestralDiscreteScheduler
        With ``set_timesteps`` already called; it is reset for each batch.
    num_samples : int
        Number of samples ``N`` to draw.
    sample_shape : tuple of int
        Shape of one sample, e.g. ``(64,)``.
    seed : int
        Seed of the run.
    backend : {'numpy', 'torch'}, default 'numpy'
        Array type of the loop.
    progress : bool, default False
        Show a progress bar on stderr with one tick per sampler step (two model calls) of a
        batch.
    first_index : int, default 0
        Index in the run of the first sample drawn here.
    batch_size : int, default 1024
        Samples per sampling loop (memory); the result does not depend on it.
    device : str, default 'cpu'
        torch device of the loop (``backend='torch'`` only).

    Returns
    -------
    numpy.ndarray
        float32 samples of shape ``(N, *sample_shape)``, in model space.

    Examples
    --------
    >>> from kdpm2.demo.gmm import GMMDenoiser
    >>> options = SampleOptions(model="gmm", steps=3)
    >>> def run(n, first=0, batch=1024):
    ...     return sample(GMMDenoiser(), build_scheduler(options), num_samples=n,
    ...                   sample_shape=(2,), seed=0, first_index=first, batch_size=batch)
    >>> bool((run(5)[3:] == run(2, first=3)).all()), bool((run(5) == run(5, batch=2)).all())
    (True, True)
    """
    from kdpm2.noise import draw, sample_generators

    steps = scheduler.num_inference_steps
    timesteps = list(scheduler.timesteps)
    starts = range(first_index, first_index + num_samples, batch_size)
    bar = _progress_bar(len(starts) * ((len(timesteps) + 1) // 2), progress and num_samples > 0)
    pieces = []
    with block_runner(backend, device) as in_blocks:
        for start in starts:
            stop = min(start + batch_size, first_index + num_samples)
            generators = sample_generators(seed, range(start, stop), backend)
            shape = (stop - start, *sample_shape)
            if backend == "torch":
                import torch

                like: Any = torch.empty(shape, dtype=torch.float32, device=device)
            else:
                like = np.empty(shape, dtype=np.float32)
            x = draw(like, generators) * float(scheduler.init_noise_sigma)
            scheduler.set_timesteps(steps)  # a fresh loop for each batch
            for i, t in enumerate(timesteps):
                eps = in_blocks(model, scheduler.scale_model_input(x, t), t, start)
                x = scheduler.step(eps, t, x, generator=generators).prev_sample
                # Calls 0, 2, 4, ... begin a DPM-2 step; a bar tick is one whole step.
                if bar is not None and (i % 2 == 1 or i == len(timesteps) - 1):
                    bar.update(1)
            pieces.append(x.detach().cpu().numpy() if backend == "torch" else x)
    if bar is not None:
        bar.close()
    if not pieces:
        return np.zeros((0, *sample_shape), dtype=np.float32)
    return np.asarray(np.concatenate(pieces) if len(pieces) > 1 else pieces[0], dtype=np.float32)


def to_output(samples: np.ndarray, model: Literal["digits", "digits-flow", "gmm"]) -> np.ndarray:
    """Convert model-space samples to what ``--npy`` writes.

    Parameters
    ----------
    samples : numpy.ndarray
        Output of :func:`sample`.
    model : {'digits', 'digits-flow', 'gmm'}

    Returns
    -------
    numpy.ndarray
        float32; digits (both models): shape ``(N, 8, 8)``, ink in ``[0, 1]`` (``(x + 1) / 2``,
        clipped, the scale of ``sklearn.datasets.load_digits().images / 16``); gmm: the points,
        ``(N, 2)``.

    Examples
    --------
    >>> to_output(np.full((1, 64), -1.0, np.float32), "digits").max()
    np.float32(0.0)
    """
    if model == "gmm":
        return samples.astype(np.float32)
    images = (samples.reshape(len(samples), *IMAGE_SHAPE) + 1.0) * 0.5
    return np.clip(images, 0.0, 1.0).astype(np.float32)


def _digits_grid(images: np.ndarray) -> np.ndarray:
    images = images[:MAX_PICTURE_DIGITS]  # the picture's memory stays bounded; --npy has all
    n = len(images)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    cell = IMAGE_SHAPE[0] * _DIGIT_SCALE
    pitch = cell + _DIGIT_GAP
    canvas = np.full((rows * pitch + _DIGIT_GAP, cols * pitch + _DIGIT_GAP), 255, np.uint8)
    pixel = np.ones((_DIGIT_SCALE, _DIGIT_SCALE), np.float32)
    for k in range(n):
        r, c = divmod(k, cols)
        y, x = _DIGIT_GAP + r * pitch, _DIGIT_GAP + c * pitch
        ink = np.round(255.0 * (1.0 - np.kron(images[k], pixel)))  # dark ink on white
        canvas[y : y + cell, x : x + cell] = ink.astype(np.uint8)
    return canvas


def _scatter_plot(points: np.ndarray, mixture: GaussianMixture2D) -> Any:
    from PIL import Image, ImageDraw

    size, extent = _PLOT_SIZE, _PLOT_EXTENT
    coords = (np.arange(size) + 0.5) / size * 2 * extent - extent
    gx, gy = np.meshgrid(coords, -coords)  # image rows run top-down, y up
    density = mixture.density(np.stack([gx, gy], axis=-1))
    shade = np.sqrt(density / density.max())[..., None]  # sqrt: keep the wide blob visible
    background = np.array([255.0, 255.0, 255.0]) * (1 - shade) + np.array([70, 130, 200]) * shade
    image = Image.fromarray(background.astype(np.uint8), mode="RGB")
    draw = ImageDraw.Draw(image)
    px = (points[:, 0] + extent) / (2 * extent) * size
    py = (extent - points[:, 1]) / (2 * extent) * size
    for x, y in zip(px.tolist(), py.tolist(), strict=True):
        if 0 <= x < size and 0 <= y < size:
            draw.ellipse((x - 1.5, y - 1.5, x + 1.5, y + 1.5), fill=(200, 30, 30))
    return image


def render(output: np.ndarray, model: Literal["digits", "digits-flow", "gmm"]) -> bytes:
    """Draw the samples as PNG bytes.

    Parameters
    ----------
    output : numpy.ndarray
        From :func:`to_output`.
    model : {'digits', 'digits-flow', 'gmm'}
        Digits become a grid of enlarged images (dark ink on white; the first
        ``MAX_PICTURE_DIGITS`` of them); gmm points become a scatter plot over the mixture's
        density on ``[-3.2, 3.2]^2``.

    Returns
    -------
    bytes
        A PNG file.
    """
    from PIL import Image

    if model == "gmm":
        image = _scatter_plot(output, default_mixture())
    else:
        image = Image.fromarray(_digits_grid(output), mode="L")
    buffer = io.BytesIO()
    # no optimize=True: it tries every filter and takes ~15x longer (3.6 s for a grid of 8192
    # digits, longer than sampling them on two processes) to save ~7% of the bytes
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_outputs(options: SampleOptions, output: np.ndarray) -> list[Path]:
    """Write the PNG and, if asked for, the ``.npy`` file, as one: both new, or both old.

    See :func:`kdpm2._io.write_files_atomic`; an error names the file that failed.

    Parameters
    ----------
    options : SampleOptions
    output : numpy.ndarray
        From :func:`to_output`.

    Returns
    -------
    list of pathlib.Path
        The files written.
    """
    files = [("--out", options.out, render(output, options.model))]
    if options.npy is not None:
        buffer = io.BytesIO()
        np.save(buffer, output, allow_pickle=False)
        files.append(("--npy", options.npy, buffer.getvalue()))
    write_files_atomic(files)
    return [path for _, path, _ in files]


def _summary(
    options: SampleOptions, written: list[Path], calls: int, seconds: float, processes: int
) -> str:
    what = "Gaussian-mixture points" if options.model == "gmm" else "digits"
    files = " and ".join(str(p) for p in written)
    shared = f", {processes} processes sharing the work" if processes > 1 else ""
    return (
        f"wrote {options.num_samples} {what} to {files} "
        f"({options.steps} steps, {calls} model calls, {options.backend}{shared}, {seconds:.2f} s)"
    )


def _sample_range(options: SampleOptions, indices: range, *, device: str, progress: bool) -> Any:
    model = build_model(options)
    scheduler = build_scheduler(options)
    samples = sample(
        model,
        scheduler,
        num_samples=len(indices),
        first_index=indices.start,
        sample_shape=SAMPLE_SHAPE[options.model],
        seed=options.seed,
        backend=options.backend,
        batch_size=options.batch_size,
        device=device,
        progress=progress,
    )
    return samples, len(scheduler.timesteps)


def _run_sample(options: SampleOptions) -> int:
    check_installed(options)
    check_outputs(options)
    warning = few_steps_warning(options)
    if warning is not None and not options.quiet:
        print(f"{PROG}: {warning}", file=sys.stderr)
    start = time.perf_counter()
    samples, calls = _sample_range(
        options,
        range(options.num_samples),
        device=options.device,
        progress=not options.quiet and sys.stderr.isatty(),
    )
    seconds = time.perf_counter() - start
    written = write_outputs(options, to_output(samples, options.model))
    if not options.quiet:
        print(_summary(options, written, calls, seconds, 1))
    return 0


#: Errors a process reports in one line; anything else is a bug and keeps its traceback.
_RUN_ERRORS = (UsageError, WeightsError, OSError, MemoryError)


def _run_distributed(options: SampleOptions, launch: Launch) -> int:
    """One process of a launcher's run: sample a shard, agree, gather on rank 0, write there."""
    from kdpm2._distributed import ProcessGroup

    writer = launch.rank == 0
    try:
        group = ProcessGroup(launch, options.device, timeout=options.timeout)
    except PeerLostError as exc:
        return _rank_error(launch, exc)
    try:
        indices = shard(options.num_samples, launch.rank, launch.world_size, BLOCK)
        sizes = [
            len(shard(options.num_samples, r, launch.world_size, BLOCK))
            for r in range(launch.world_size)
        ]
        device = str(group.device)
        error: BaseException | None = None
        try:  # set-up first, so that a bad output path stops every process before any work
            check_installed(options, writer=writer)
            if writer:
                check_outputs(options)
        except _RUN_ERRORS as exc:
            error = exc
        if group.any_failed(error is not None):
            return _rank_error(launch, error) if error is not None else 0
        warning = few_steps_warning(options)
        if writer and warning is not None and not options.quiet:
            print(f"{PROG}: {warning}", file=sys.stderr)
        start = time.perf_counter()
        samples: Any = None
        calls = 0
        try:
            samples, calls = _sample_range(options, indices, device=device, progress=False)
        except _RUN_ERRORS as exc:
            error = exc
        if group.any_failed(error is not None):
            # The process that failed says why (and exits 1); the others stop quietly, so
            # the launcher's summary names the one that failed as the root cause.
            return _rank_error(launch, error) if error is not None else 0
        gathered = group.gather(samples, sizes)
        seconds = time.perf_counter() - start
        if gathered is None:
            return 0
        written = write_outputs(options, to_output(gathered, options.model))
        if not options.quiet:
            print(_summary(options, written, calls, seconds, launch.world_size))
        return 0
    except _RUN_ERRORS as exc:  # PeerLostError (a collective failed) or a failed write
        return _rank_error(launch, exc)
    finally:
        group.close()


def _rank_error(launch: Launch, exc: BaseException) -> int:
    message = f"{launch}: {exc}"
    print(f"{PROG}: error: {message}", file=sys.stderr)
    record_error(message)
    return 2 if isinstance(exc, UsageError) else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``kdpm2`` command line.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; default ``sys.argv[1:]``.

    Returns
    -------
    int
        0 on success, 2 for a bad command line, 1 when the bundled model or an output file
        cannot be used, 130 after Ctrl-C (SIGINT) and 143 after SIGTERM. Errors are one line
        on stderr, without a traceback. An interrupted or failed run leaves the output files as
        they were (no temporary file either).

    Notes
    -----
    Started by torch.distributed's launcher with ``WORLD_SIZE`` > 1, the process samples its
    share and rank 0 writes (see the module docstring). A bad command line is the same on every
    process, so only the first process of each machine reports it; a process that fails later
    reports its own error, labelled with its rank, and exits 1 while the others stop without
    writing anything and exit 0, so that the launcher's summary names the one that failed.
    """
    with _sigterm_raises():
        try:
            return _main(argv)
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted (Ctrl-C); no output file was changed", file=sys.stderr)
            return 130
        except Terminated:
            print(f"{PROG}: terminated (SIGTERM); no output file was changed", file=sys.stderr)
            return 143


class Terminated(BaseException):
    """SIGTERM arrived: raised in the main thread so that clean-up code runs, as for Ctrl-C."""


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` for the length of the block (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(argv: Sequence[str] | None) -> int:
    try:
        launch = launch_from_env()
    except ValueError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    try:
        options = parse_args(argv)
        if launch is None:
            return _run_sample(options)
        _require_torch_for(launch)
        _require_cuda(options)  # before the process group, which would pick NCCL
    except UsageError as exc:
        if launch is None or launch.local_rank == 0:
            print(f"{PROG}: error: {exc} (see `{PROG} sample --help`)", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    except (WeightsError, OSError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    return _run_distributed(options, launch)


def _require_torch_for(launch: Launch) -> None:
    if importlib.util.find_spec("torch") is None:
        raise UsageError(
            f"WORLD_SIZE={launch.world_size} asks for a run shared by {launch.world_size} "
            "processes, which needs torch (torch.distributed), but torch is not installed; "
            "install it with `pip install 'kdpm2[torch]'`, or run one process (unset WORLD_SIZE)."
        )
