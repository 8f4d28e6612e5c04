"""Tests for `kdpm2 sample`: outputs, argument errors, progress bar and the torch-free path."""

from __future__ import annotations

import io
import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from kdpm2 import cli
from kdpm2._blocks import block_runner, in_blocks
from kdpm2._io import write_bytes_atomic
from tests.conftest import one_process_env

SRC = Path(__file__).resolve().parents[1] / "src"


def _run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_default_digits_run_writes_png_and_npy(tmp_path, capsys):
    """If this fails, the package's main job (`kdpm2 sample` -> a picture of digits) is broken."""
    from PIL import Image

    png, npy = tmp_path / "d.png", tmp_path / "d.npy"
    code, out, err = _run(
        ["sample", "--num-samples", 6, "--steps", 3, "--out", png, "--npy", npy], capsys
    )
    assert code == 0
    # the only thing on stderr: 3 steps is too few for good digits, and the user is told so
    assert err.startswith("kdpm2: warning: 3 steps is below the 20 (or 10 with --karras)"), err
    assert len(err.splitlines()) == 1
    assert f"wrote 6 digits to {png} and {npy} (3 steps, 5 model calls, numpy" in out
    samples = np.load(npy)
    assert samples.shape == (6, 8, 8)
    assert np.float32 == samples.dtype
    assert samples.min() == 0.0
    assert 1.0 >= samples.max() > 0.5
    assert np.ptp(samples, axis=0).max() > 0.5  # six different images, not one
    # The grid: 2 rows x 3 columns of 8 * 6 pixels with 2-pixel gaps; cell 0 is sample 0, dark ink.
    image = np.asarray(Image.open(png))
    assert image.shape == (2 * 50 + 2, 3 * 50 + 2)
    expected = np.round(255 * (1 - np.kron(samples[0], np.ones((6, 6))))).astype(np.uint8)
    np.testing.assert_array_equal(expected, image[2:50, 2:50])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npy", "d.png"]  # no temp files left


def test_same_seed_same_samples_other_seed_other_samples(tmp_path, capsys):
    """If this fails, --seed does not make runs reproducible (or is ignored)."""

    def run(seed, name):
        png, npy = tmp_path / f"{name}.png", tmp_path / f"{name}.npy"
        argv = ["sample", "-q", "--num-samples", 4, "--steps", 2, "--seed", seed]
        assert cli.main([str(a) for a in [*argv, "--out", png, "--npy", npy]]) == 0
        return np.load(npy)

    np.testing.assert_array_equal(run(1, "a"), run(1, "b"))
    assert not np.allclose(run(1, "a"), run(2, "c"))
    assert capsys.readouterr() == ("", "")  # --quiet prints nothing


def test_gmm_run_writes_points_near_the_mixture(tmp_path, capsys):
    """If this fails, --model gmm (sampling with the exact denoiser) is broken.

    With the exact denoiser, 20 steps must put nearly every point near one of the components.
    """
    from PIL import Image

    from kdpm2.demo.gmm import default_mixture

    png, npy = tmp_path / "g.png", tmp_path / "g.npy"
    code, out, _ = _run(
        ["sample", "--model", "gmm", "--num-samples", 400, "--out", png, "--npy", npy], capsys
    )
    assert code == 0
    assert "wrote 400 Gaussian-mixture points" in out
    points = np.load(npy)
    assert points.shape == (400, 2)
    mix = default_mixture()
    dist = np.linalg.norm(points[:, None, :] - mix.means[None], axis=-1)
    within = (dist / mix.stds < 4).any(axis=1)
    assert within.mean() > 0.97
    assert np.asarray(Image.open(png)).shape == (360, 360, 3)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_digits_flow_run_writes_digits(backend, tmp_path, capsys):
    """If this fails, `kdpm2 sample --model digits-flow` (the rectified-flow network with the
    flow-matching sampler) is broken on that backend."""
    if backend == "torch":
        pytest.importorskip("torch")
    png, npy = tmp_path / "f.png", tmp_path / "f.npy"
    code, out, err = _run(
        ["sample", "--model", "digits-flow", "--num-samples", 6, "--backend", backend,
         "--out", png, "--npy", npy],
        capsys,
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert f"wrote 6 digits to {png} and {npy} (20 steps, 39 model calls, {backend}" in out
    samples = np.load(npy)
    assert samples.shape == (6, 8, 8)
    assert np.float32 == samples.dtype
    assert samples.min() == 0.0
    assert samples.max() > 0.9
    # about a third ink, as real digits (0.31); clipped noise would give 0.49
    assert 0.2 < samples.mean() < 0.4
    assert np.ptp(samples, axis=0).max() > 0.5  # six different images, not one


def test_flow_sampler_options_reach_the_flow_scheduler():
    """If this fails, --model digits-flow samples with the diffusion scheduler, or --eta,
    --karras and --steps do not reach the flow scheduler."""
    options = cli.parse_args(
        ["sample", "--model", "digits-flow", "--eta", "0", "--karras", "--steps", "7"]
    )
    scheduler = cli.build_scheduler(options)
    assert type(scheduler).__name__ == "FlowMatchKDPM2AncestralDiscreteScheduler"
    assert scheduler.config["eta"] == 0.0
    assert scheduler.config["use_karras_sigmas"] is True
    assert len(scheduler.timesteps) == 13
    assert float(scheduler.timesteps[0]) == 1000.0  # sigma 1 times num_train_timesteps
    assert float(scheduler.init_noise_sigma) == 1.0
    default = cli.build_scheduler(cli.parse_args(["sample", "--model", "digits-flow"]))
    assert (default.config["eta"], default.config["use_karras_sigmas"]) == (1.0, False)


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        ([], "required: COMMAND"),
        (["draw"], "invalid choice: 'draw'"),
        (["sample", "--steps", "0"], "--steps must be between 1 and 1000, got 0"),
        (["sample", "--steps", "ten"], "invalid int value: 'ten'"),
        (["sample", "--num-samples", "-3"], "--num-samples must be between 1 and"),
        (["sample", "--eta", "nan"], "--eta must be between 0 and 1, got nan"),
        (["sample", "--eta", "1.5"], "--eta must be between 0 and 1, got 1.5"),
        (["sample", "--seed", "-1"], "--seed must be between 0 and 2**64 - 1, got -1"),
        (["sample", "--seed", str(2**64)], "--seed must be between 0 and 2**64 - 1"),
        (["sample", "--model", "cats"], "invalid choice: 'cats'"),
        (["sample", "--backend", "jax"], "invalid choice: 'jax'"),
        (["sample", "--out", "pic.jpg"], "--out 'pic.jpg' must end in .png"),
        (["sample", "--npy", "x.txt"], "--npy 'x.txt' must end in .npy"),
        (["sample", "--out", "no/such/dir/x.png"], "folder 'no/such/dir' does not exist"),
        (["sample", "--bogus"], "unrecognized arguments: --bogus"),
        (["sample", "--batch-size", "0"], "--batch-size must be between 1 and 100000, got 0"),
        (["sample", "--device", "cuda"], "--device cuda needs --backend torch"),
        (["sample", "--device", "tpu"], "invalid choice: 'tpu'"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_code_2(argv, fragment, capsys, tmp_path, monkeypatch):
    """If this fails, a typo gives a traceback or a wall of usage text instead of one clear line."""
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(argv, capsys)
    assert code == 2
    assert out == ""
    assert len(err.splitlines()) == 1, err
    assert err.startswith("kdpm2: error: ")
    assert fragment in err
    assert list(tmp_path.iterdir()) == []


def test_the_picture_of_many_digits_is_bounded():
    """If this fails, the PNG grows with --num-samples without bound (100000 digits drew a
    15800-pixel square, 250 MB, and peaked at 3 GB), or no longer shows the first digits."""
    from PIL import Image

    many = np.linspace(0, 1, (cli.MAX_PICTURE_DIGITS + 904) * 64, dtype=np.float32)
    many = many.reshape(-1, 8, 8)
    image = np.asarray(Image.open(io.BytesIO(cli.render(many, "digits"))))
    capped = np.asarray(
        Image.open(io.BytesIO(cli.render(many[: cli.MAX_PICTURE_DIGITS], "digits")))
    )
    np.testing.assert_array_equal(capped, image)
    assert image.shape == (64 * 50 + 2, 64 * 50 + 2)


def test_version_is_printed(capsys):
    """If this fails, `kdpm2 --version` asks for a command instead of printing the version."""
    import kdpm2

    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"kdpm2 {kdpm2.__version__}"


def test_help_exits_zero(capsys):
    """If this fails, `kdpm2 sample --help` reports an error."""
    code, out, _ = _run(["sample", "--help"], capsys)
    assert code == 0
    assert "--num-samples" in out


def test_damaged_weights_give_one_line_and_exit_code_1(tmp_path, capsys, monkeypatch):
    """If this fails, a broken install crashes the CLI with a traceback."""
    import kdpm2.demo.digits as digits

    bad = tmp_path / "digits.safetensors"
    bad.write_bytes(b"0" * 10)
    monkeypatch.setattr(digits, "WEIGHTS_PATH", bad)
    (tmp_path / "manifest.json").write_text(
        '{"files": {"digits.safetensors": {"sha256": "00", "size": 5}}}'
    )
    code, _, err = _run(["sample", "--out", tmp_path / "x.png"], capsys)
    assert code == 1
    assert len(err.splitlines()) == 1
    assert f"the digits weights file {bad} is longer than expected" in err


def test_progress_bar_ticks_once_per_step(monkeypatch, capsys):
    """If this fails, the progress bar counts half-steps (2n - 1), not the n steps asked for."""
    monkeypatch.setitem(sys.modules, "tqdm", None)  # force the built-in fallback bar
    options = cli.SampleOptions(num_samples=2, steps=4)
    model, scheduler = cli.build_model(options), cli.build_scheduler(options)
    cli.sample(model, scheduler, num_samples=2, sample_shape=(64,), seed=0, progress=True)
    err = capsys.readouterr().err
    ticks = [chunk for chunk in err.split("\r") if chunk]
    assert [f"sampling {k}/4 steps" for k in range(1, 5)] == [t.split(",")[0] for t in ticks]
    assert err.endswith("steps/s\n")


def test_no_progress_bar_when_stderr_is_not_a_terminal(tmp_path, capsys):
    """If this fails, logs and pipes fill with progress-bar escape codes."""
    code, out, err = _run(
        ["sample", "--num-samples", 2, "--steps", 20, "--out", tmp_path / "x.png"], capsys
    )
    assert (code, err) == (0, "")
    assert out.startswith("wrote 2 digits")


def test_sampler_options_reach_the_scheduler():
    """If this fails, --eta, --karras or --steps are parsed but silently ignored."""
    options = cli.parse_args(["sample", "--eta", "0", "--karras", "--steps", "7"])
    scheduler = cli.build_scheduler(options)
    assert scheduler.config["eta"] == 0.0
    assert scheduler.config["use_karras_sigmas"] is True
    assert len(scheduler.timesteps) == 13
    default = cli.build_scheduler(cli.parse_args(["sample"]))
    assert (default.config["eta"], default.config["use_karras_sigmas"]) == (1.0, False)


def test_gmm_on_the_torch_backend(tmp_path, capsys):
    """If this fails, the exact mixture denoiser does not work with torch tensors."""
    pytest.importorskip("torch")
    npy = tmp_path / "g.npy"
    code, _, _ = _run(["sample", "--model", "gmm", "--backend", "torch", "--num-samples", 50,
                       "--out", tmp_path / "g.png", "--npy", npy], capsys)  # fmt: skip
    assert code == 0
    points = np.load(npy)
    assert points.shape == (50, 2)
    assert np.float32 == points.dtype
    assert np.abs(points).max() < 3.5  # every component lies within radius 2 + 4 std


def test_torch_backend_gives_digits_too(tmp_path, capsys):
    """If this fails, --backend torch is broken (model or scheduler on tensors)."""
    pytest.importorskip("torch")
    npy = tmp_path / "t.npy"
    code, out, _ = _run(
        [
            "sample",
            "--backend",
            "torch",
            "--num-samples",
            5,
            "--steps",
            3,
            "--out",
            tmp_path / "t.png",
            "--npy",
            npy,
        ],
        capsys,
    )
    assert code == 0
    assert "torch" in out
    samples = np.load(npy)
    assert samples.shape == (5, 8, 8)
    assert np.float32 == samples.dtype
    assert samples.min() == 0.0
    assert np.ptp(samples, axis=0).max() > 0.5


_NO_TORCH_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["torch"] = None  # any `import torch` now raises ImportError
    from kdpm2.cli import main
    out = sys.argv[1]
    rc = main(["sample", "--num-samples", "3", "--steps", "20", "--backend", "numpy",
               "--out", out + "/a.png", "--npy", out + "/a.npy"])
    assert rc == 0, rc
    rc = main(["sample", "--model", "gmm", "--num-samples", "3", "--steps", "2",
               "--out", out + "/b.png"])
    assert rc == 0, rc
    rc = main(["sample", "--model", "digits-flow", "--num-samples", "3", "--steps", "20",
               "--out", out + "/f.png", "--npy", out + "/f.npy"])
    assert rc == 0, rc
    loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
    assert loaded == ["torch"] and sys.modules["torch"] is None, loaded
    print("torch-free ok")
    sys.exit(main(["sample", "--backend", "torch", "--out", out + "/c.png"]))
    """
)


def test_few_steps_warn_once_and_enough_steps_stay_silent(tmp_path, capsys):
    """Below the step counts where the README's quality table passes (20, or 10 with Karras
    sigmas) the run says so on stderr; at those counts, and with -q, it does not."""
    png = tmp_path / "x.png"
    for argv, warned in (
        (["--steps", 9, "--karras"], True),
        (["--steps", 10, "--karras"], False),
        (["--steps", 19], True),
        (["--steps", 19, "-q"], False),
        (["--model", "gmm", "--steps", 2], False),
        (["--model", "digits-flow", "--steps", 9], True),
        (["--model", "digits-flow", "--steps", 10], False),
    ):
        code, _, err = _run(["sample", "--num-samples", 2, "--out", png, *argv], capsys)
        assert code == 0
        assert ("warning:" in err) == warned, (argv, err)


def test_few_steps_warning_counts_are_per_model():
    """The flow model passes the quality check from 10 steps with either spacing (README table),
    the diffusion model from 20 (10 with Karras): each warning names its own count."""

    def warning(*argv):
        return cli.few_steps_warning(cli.parse_args(["sample", *argv]))

    flow = warning("--model", "digits-flow", "--steps", "9")
    assert flow is not None
    assert flow.startswith("warning: 9 steps is below the 10 at which the digits pass"), flow
    assert warning("--model", "digits-flow", "--steps", "9", "--karras") == flow
    assert warning("--model", "digits-flow", "--steps", "10") is None
    diffusion = warning("--steps", "10")
    assert diffusion is not None
    assert diffusion.startswith("warning: 10 steps is below the 20 (or 10 with --karras)")


def test_missing_optional_package_is_found_before_any_work(tmp_path, capsys, monkeypatch):
    """Without Pillow (a plain `pip install kdpm2`) the run stops at once with the install line,
    exit code 2, and writes nothing (it used to sample first, then fail on the PNG)."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "PIL" else real(name, *a)
    )
    monkeypatch.setattr(cli, "sample", lambda *a, **k: pytest.fail("sampled first"))
    code, out, err = _run(["sample", "--model", "gmm", "--out", tmp_path / "g.png"], capsys)
    assert (code, out) == (2, "")
    assert err.startswith("kdpm2: error: Pillow is not installed")
    assert "pip install 'kdpm2[cli]'" in err
    assert list(tmp_path.iterdir()) == []


def test_huge_seeds_work_on_both_backends(tmp_path, capsys):
    """The largest seed a torch.Generator takes runs on both backends (it used to overflow)."""
    pytest.importorskip("torch")
    for backend in ("numpy", "torch"):
        code, _, err = _run(
            [
                "sample",
                "--model",
                "gmm",
                "--num-samples",
                3,
                "--steps",
                2,
                "--backend",
                backend,
                "--seed",
                str(2**64 - 1),
                "--out",
                tmp_path / f"{backend}.png",
            ],
            capsys,
        )
        assert (code, err) == (0, "")


def test_numpy_backend_never_imports_torch(tmp_path):
    """If this fails, `kdpm2 sample` needs torch, which the NumPy path promises it does not."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-c", _NO_TORCH_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert "torch-free ok" in result.stdout, result.stderr
    assert np.load(tmp_path / "a.npy").shape == (3, 8, 8)
    assert np.load(tmp_path / "f.npy").shape == (3, 8, 8)
    # Asking for torch without it is a user error: one line, exit code 2.
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "--backend torch needs torch" in result.stderr


def test_python_dash_m_runs_the_cli(tmp_path):
    """If this fails, `python -m kdpm2` does not reach the command line."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-m", "kdpm2", "sample", "--steps", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "--steps must be between 1 and 1000, got 0" in result.stderr


def test_atomic_write_leaves_old_file_when_replace_fails(tmp_path, monkeypatch):
    """If this fails, an interrupted write can leave a half-written output or a stray temp file."""
    target = tmp_path / "x.png"
    target.write_bytes(b"old")

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_bytes_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert [target] == list(tmp_path.iterdir())


# ------------------------------------------------------------- per-sample seeding
def _draw(backend, n, *, seed=5, first=0, batch=cli.DEFAULT_BATCH_SIZE, model="digits", steps=2):
    options = cli.SampleOptions(model=model, steps=steps, backend=backend)
    return cli.sample(
        cli.build_model(options),
        cli.build_scheduler(options),
        num_samples=n,
        sample_shape=cli.SAMPLE_SHAPE[model],
        seed=seed,
        backend=backend,
        first_index=first,
        batch_size=batch,
    )


def _backend(name):
    if name == "torch":
        pytest.importorskip("torch")
    return name


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_first_k_of_n_samples_are_a_run_of_k(backend):
    """If this fails, sample k depends on --num-samples (it did when one generator drew the
    whole batch), so no split of the work can reproduce a single run."""
    _backend(backend)
    many = _draw(backend, 600)
    for k in (1, 5, 256, 300):
        np.testing.assert_array_equal(many[:k], _draw(backend, k))
    assert not np.array_equal(many[:5], _draw(backend, 5, seed=6))


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_batch_size_does_not_change_a_bit(backend):
    """If this fails, --batch-size changes the samples: a batch draws noise from the wrong
    generators, or a sample reaches the model in a call of another shape (one row goes through
    a matrix-vector product that rounds differently: measured on this machine)."""
    _backend(backend)
    reference = _draw(backend, 270, batch=1024)  # two blocks, the second partial
    for batch in (1, 7, 256, 100):
        np.testing.assert_array_equal(reference, _draw(backend, 270, batch=batch), err_msg=batch)


@pytest.mark.parametrize("model", ["digits", "gmm"])
def test_shards_concatenate_to_the_single_run(model):
    """If this fails, a process's share (first_index > 0, uneven sizes) is not the same samples
    as that stretch of a single run, on which every multi-process run relies."""
    from kdpm2._distributed import shard

    n = 700
    whole = _draw("numpy", n, model=model)
    for world in (2, 3, 4):
        parts = [shard(n, r, world, cli.BLOCK) for r in range(world)]
        assert [range(n)] == [range(parts[0].start, parts[-1].stop)]
        drawn = [_draw("numpy", len(p), first=p.start, model=model) for p in parts if len(p)]
        np.testing.assert_array_equal(whole, np.concatenate(drawn), err_msg=str(world))


def test_model_always_sees_whole_blocks_at_fixed_rows():
    """If this fails, a model call's shape depends on the batch (so its rounding may too), or a
    sample is not at row k % BLOCK of its call."""
    seen = []

    def model(x, t):
        seen.append(x.copy())
        return x * 0.5

    x = np.arange(10 * 3, dtype=np.float32).reshape(10, 3) + 1
    out = in_blocks(model, x, 999.0, first=cli.BLOCK - 4)  # straddles two blocks
    np.testing.assert_array_equal(x * 0.5, out)
    assert [a.shape for a in seen] == [(cli.BLOCK, 3)] * 2
    np.testing.assert_array_equal(x[:4], seen[0][-4:])  # rows BLOCK-4 .. BLOCK-1 of block 0
    np.testing.assert_array_equal(x[4:], seen[1][:6])  # rows 0 .. 5 of block 1
    assert not seen[0][:-4].any()  # the padding is zeros
    assert not seen[1][6:].any()


def _threads_env(threads):
    """This environment with `threads` math-library threads (None: the libraries' default)."""
    env = one_process_env()
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.pop(name, None)
        if threads is not None:
            env[name] = str(threads)
    return env


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("model", ["digits", "digits-flow"])
def test_samples_do_not_depend_on_the_thread_count(model, backend, tmp_path):
    """If this fails, `kdpm2 sample` gives other bits with 1 thread, 2 threads or the default
    count: a model call ran on several threads of the math library (whose split changes the
    sums), so a 1-process run no longer matches a torchrun run (one thread per worker)."""
    if backend == "torch":
        pytest.importorskip("torch")
    files = {}
    for threads in (1, 2, None):
        out = tmp_path / str(threads)
        out.mkdir()
        command = [sys.executable, "-m", "kdpm2", "sample", "-q", "--model", model,
                   "--backend", backend, "--num-samples", "700", "--steps", "2", "--seed", "3",
                   "--out", str(out / "x.png"), "--npy", str(out / "x.npy")]  # fmt: skip
        env = _threads_env(threads)
        if platform.machine() in ("x86_64", "AMD64"):
            # OpenBLAS's Haswell kernels split a product among threads in a way that changes
            # its sums (other kernels may not): with them a thread-dependent result shows on
            # any x86-64 CPU
            env["OPENBLAS_CORETYPE"] = "Haswell"
        result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        assert result.returncode == 0, result.stderr
        files[threads] = [(out / name).read_bytes() for name in ("x.npy", "x.png")]
    assert files[1] == files[2], "1 and 2 threads"
    assert files[1] == files[None], "1 thread and the default"


#: Another x86-64 CPU, as `make test-foreign-cpu` emulates it: torch's portable kernels,
#: OpenBLAS's Haswell kernels, NumPy without its AVX-512 loops.
ANOTHER_CPU = {
    "ATEN_CPU_CAPABILITY": "default",
    "OPENBLAS_CORETYPE": "Haswell",
    "NPY_DISABLE_CPU_FEATURES": "AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL "
    "AVX512_SPR",
}
#: How far a pixel (in [0, 1]) of `kdpm2 sample` may move between machines: the model's and
#: the BLAS's last-bit differences, carried through 39 model calls (measured: at most 4e-5).
ACROSS_MACHINES_ATOL = 1e-3


@pytest.mark.slow
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86-64 kernels")
@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("model", ["digits", "digits-flow"])
def test_samples_on_another_cpu_are_float_close(model, backend, tmp_path):
    """If this fails, the README's promise across machines is broken: with another CPU's kernels
    the same run moves by more than ACROSS_MACHINES_ATOL (a result that hangs on a last bit,
    e.g. a comparison or a rounding to an integer inside the sampler)."""
    if backend == "torch":
        pytest.importorskip("torch")
    samples = []
    for name, extra in (("here", {}), ("there", ANOTHER_CPU)):
        npy = tmp_path / f"{name}.npy"
        command = [sys.executable, "-m", "kdpm2", "sample", "-q", "--model", model,
                   "--backend", backend, "--num-samples", "300", "--steps", "20",
                   "--out", str(tmp_path / f"{name}.png"), "--npy", str(npy)]  # fmt: skip
        env = {**_threads_env(None), **extra}
        result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        assert result.returncode == 0, result.stderr
        samples.append(np.load(npy))
    np.testing.assert_allclose(samples[0], samples[1], rtol=0, atol=ACROSS_MACHINES_ATOL)


def test_block_runner_restores_the_thread_settings():
    """If this fails, `kdpm2.cli.sample` leaves NumPy's BLAS or torch on one thread after it
    returns (a program that samples and then trains would run on one core)."""
    from threadpoolctl import threadpool_info

    def blas_threads():
        return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]

    before = blas_threads()
    with block_runner("numpy") as run:
        assert [1] * len(before) == blas_threads()
        assert (
            np.arange(6.0).reshape(3, 2) == run(lambda b, t: b, np.arange(6.0).reshape(3, 2), 0, 0)
        ).all()
    assert before == blas_threads()
    torch = pytest.importorskip("torch")
    torch_before = torch.get_num_threads()
    with block_runner("torch"):
        assert torch.get_num_threads() == 1
    assert torch_before == torch.get_num_threads()


def test_summary_says_how_many_processes_shared_the_work(tmp_path):
    """If this fails, the one summary line of a shared run does not say it was shared."""
    options = cli.SampleOptions(num_samples=8, steps=3)
    line = cli._summary(options, [tmp_path / "x.png"], 5, 1.5, 3)
    assert line == (
        f"wrote 8 digits to {tmp_path / 'x.png'} "
        "(3 steps, 5 model calls, numpy, 3 processes sharing the work, 1.50 s)"
    )
    assert ", numpy, 1.50 s)" in cli._summary(options, [tmp_path / "x.png"], 5, 1.5, 1)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WORLD_SIZE": "two", "RANK": "0"}, "WORLD_SIZE='two' is not an integer"),
        ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK=2 is outside [0, WORLD_SIZE=2)"),
        ({"WORLD_SIZE": "2"}, "RANK=None is not an integer"),
    ],
)
def test_a_broken_launcher_environment_is_one_line(env, message, monkeypatch, capsys, tmp_path):
    """If this fails, a half-set launcher environment gives a traceback or runs the whole job."""
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, out, err = _run(["sample", "--out", tmp_path / "x.png"], capsys)
    assert (code, out) == (2, "")
    assert len(err.splitlines()) == 1
    assert message in err
    assert list(tmp_path.iterdir()) == []


def test_world_size_one_runs_as_one_process_without_torch(tmp_path):
    """If this fails, `torchrun --nproc-per-node 1` (WORLD_SIZE=1) needs torch or a process
    group for a job that one process does anyway."""
    env = {
        **os.environ,
        "WORLD_SIZE": "1",
        "RANK": "0",
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    script = (
        "import sys; sys.modules['torch'] = None\n"
        "from kdpm2.cli import main\n"
        f"sys.exit(main(['sample', '-q', '--num-samples', '3', '--steps', '2', "
        f"'--out', {str(tmp_path / 'x.png')!r}]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120,
        check=False,
    )  # fmt: skip
    assert (result.returncode, result.stderr) == (0, "")
    assert (tmp_path / "x.png").exists()


def test_several_processes_without_torch_is_one_line(tmp_path):
    """If this fails, a launcher's run in an environment without torch crashes with a traceback
    (or silently runs the whole job in every process)."""
    env = {
        **os.environ,
        "WORLD_SIZE": "2",
        "RANK": "0",
        "LOCAL_RANK": "0",
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    script = (
        "import sys, importlib.util\n"
        "real = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda n, *a: None if n == 'torch' else real(n, *a)\n"
        "sys.modules['torch'] = None\n"
        "from kdpm2.cli import main\n"
        f"sys.exit(main(['sample', '--out', {str(tmp_path / 'x.png')!r}]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120,
        check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "WORLD_SIZE=2 asks for a run shared by 2 processes, which needs torch" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_cuda_without_a_gpu_is_one_line(tmp_path, capsys):
    """If this fails, --device cuda on a machine without CUDA crashes inside torch with a
    traceback instead of saying what to do."""
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    argv = ["sample", "--backend", "torch", "--device", "cuda", "--out", tmp_path / "x.png"]
    code, out, err = _run(argv, capsys)
    assert (code, out) == (2, "")
    assert len(err.splitlines()) == 1
    assert "--device cuda: torch finds no CUDA device here" in err
    assert list(tmp_path.iterdir()) == []
