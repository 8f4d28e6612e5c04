"""Faults around `kdpm2 sample`: protected files, a full disk, signals, interrupted writes.

Each test injects one fault (a read-only target, a file-size limit standing in for a full
disk, SIGTERM or SIGINT while sampling, an interrupt or a failed rename in the middle of the
write) and checks the promise: the outputs are both old or both new, no temporary file is
left, and the user reads one line that names the file and the way out.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from kdpm2 import _io, cli
from tests.conftest import one_process_env

_env = one_process_env


def _old_outputs(folder):
    """An earlier run's two files, to check that a failed run keeps them."""
    png, npy = folder / "x.png", folder / "x.npy"
    png.write_bytes(b"old picture")
    npy.write_bytes(b"old numbers")
    return png, npy


def _only(folder, *names):
    return sorted(p.name for p in folder.iterdir()) == sorted(names)


def test_a_read_only_npy_is_never_replaced(tmp_path, capsys):
    """If this fails, a file the user protected with chmod a-w is overwritten (even by root,
    which could), or the refusal comes after the sampling work or without naming the file."""
    png, npy = _old_outputs(tmp_path)
    npy.chmod(0o444)
    code = cli.main(["sample", "-q", "--out", str(png), "--npy", str(npy)])
    err = capsys.readouterr().err
    assert code == 2
    assert [f"kdpm2: error: --npy {str(npy)!r}: exists and is read-only"] == [
        line.split("; remove")[0] for line in err.splitlines()
    ]
    assert (png.read_bytes(), npy.read_bytes()) == (b"old picture", b"old numbers")
    assert npy.stat().st_mode & 0o777 == 0o444


def _limit_file_size(limit):
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


def test_a_full_disk_keeps_both_old_files_and_names_the_one_that_failed(tmp_path):
    """If this fails, a disk that fills between the PNG and the .npy leaves a new picture
    beside old numbers (or a temporary file), or the message does not say which file."""
    png, npy = _old_outputs(tmp_path)
    # the PNG of 1000 digits (about 42 kB) fits under the limit, the .npy (256 kB) does not
    result = subprocess.run(
        [sys.executable, "-m", "kdpm2", "sample", "-q", "--num-samples", "1000", "--steps", "2",
         "--out", str(png), "--npy", str(npy)],
        capture_output=True, text=True, env=_env(), timeout=300, check=False,
        preexec_fn=_limit_file_size(100_000),
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert [f"kdpm2: error: cannot write --npy {str(npy)!r}: File too large; no output was "
            "changed"] == result.stderr.splitlines()  # fmt: skip
    assert (png.read_bytes(), npy.read_bytes()) == (b"old picture", b"old numbers")
    assert _only(tmp_path, "x.png", "x.npy")


@pytest.mark.parametrize(
    ("signum", "code", "name"),
    [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")],
)
def test_a_signal_while_sampling_is_one_line_and_leaves_the_old_files(signum, code, name, tmp_path):
    """If this fails, SIGTERM or Ctrl-C prints a traceback, exits with another code, or
    leaves a changed output or a temporary file."""
    png, npy = _old_outputs(tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "kdpm2", "sample", "--num-samples", "100000", "--steps", "50",
         "--out", str(png), "--npy", str(npy)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )  # fmt: skip
    time.sleep(3)  # well into the sampling (100000 digits take minutes)
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode == code, err
    assert err.splitlines()[-1].startswith(f"kdpm2: {name} ("), err
    assert "Traceback" not in err
    assert (png.read_bytes(), npy.read_bytes()) == (b"old picture", b"old numbers")
    assert _only(tmp_path, "x.png", "x.npy")


def test_an_interrupt_in_the_middle_of_the_write_keeps_both_old_files(tmp_path, monkeypatch):
    """If this fails, Ctrl-C after the first file is flushed leaves it replaced (or its
    temporary file behind) while the second is old."""
    png, npy = _old_outputs(tmp_path)
    calls = []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(KeyboardInterrupt):
        _io.write_files_atomic([("--out", png, b"new picture"), ("--npy", npy, b"new numbers")])
    assert (png.read_bytes(), npy.read_bytes()) == (b"old picture", b"old numbers")
    assert _only(tmp_path, "x.png", "x.npy")


@pytest.mark.parametrize("had_npy", [True, False])
def test_a_failed_second_rename_puts_the_first_file_back(tmp_path, monkeypatch, had_npy):
    """If this fails, a rename that fails after the first one leaves the pair mixed: a new
    picture with old (or no) numbers, or a stray link to the old file."""
    png, npy = _old_outputs(tmp_path)
    if not had_npy:
        npy.unlink()
    real = os.replace
    renames = []

    def replace(src, dst):
        renames.append(dst)
        if Path(dst) == npy and Path(src).suffix == ".tmp":
            raise OSError(5, "Input/output error")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(_io.OutputError, match=r"cannot write --npy .*; no output was changed"):
        _io.write_files_atomic([("--out", png, b"new picture"), ("--npy", npy, b"new numbers")])
    assert png.read_bytes() == b"old picture"
    if had_npy:
        assert npy.read_bytes() == b"old numbers"
        assert _only(tmp_path, "x.png", "x.npy")
    else:
        assert _only(tmp_path, "x.png")
    assert png in [Path(p) for p in renames]  # the first file was replaced, then put back


def test_a_successful_write_replaces_both_and_leaves_nothing_else(tmp_path):
    """If this fails, a normal write leaves a backup link or a temporary file behind."""
    png, npy = _old_outputs(tmp_path)
    _io.write_files_atomic([("--out", png, b"new picture"), ("--npy", npy, b"new numbers")])
    assert (png.read_bytes(), npy.read_bytes()) == (b"new picture", b"new numbers")
    assert _only(tmp_path, "x.png", "x.npy")


def test_outputs_are_checked_before_any_work(tmp_path, capsys, monkeypatch):
    """If this fails, an output that cannot be written is found only after all the sampling."""
    monkeypatch.setattr(cli, "sample", lambda *a, **k: pytest.fail("sampled before the check"))
    target = tmp_path / "folder.png"
    target.mkdir()
    assert cli.main(["sample", "-q", "--out", str(target)]) == 2
    assert f"--out {str(target)!r}: is a folder" in capsys.readouterr().err


def test_the_samples_written_are_the_samples_drawn(tmp_path):
    """If this fails, the pair write changed the bytes of a normal run's .npy."""
    png, npy = tmp_path / "a.png", tmp_path / "a.npy"
    assert cli.main(["sample", "-q", "--num-samples", "5", "--steps", "2", "--out", str(png),
                     "--npy", str(npy)]) == 0  # fmt: skip
    options = cli.SampleOptions(num_samples=5, steps=2)
    model, scheduler = cli.build_model(options), cli.build_scheduler(options)
    drawn = cli.sample(model, scheduler, num_samples=5, sample_shape=(64,), seed=0)
    np.testing.assert_array_equal(cli.to_output(drawn, "digits"), np.load(npy))


# ------------------------------------------------------------------ hostile files
@pytest.mark.parametrize("kind", ["dev-zero", "sparse", "fifo"])
def test_a_hostile_weights_file_is_refused_before_reading(tmp_path, kind):
    """If this fails, a weights path that is a device, a FIFO or a huge sparse file is read
    until memory runs out (or blocks forever) instead of being refused by its size and kind."""
    from kdpm2.demo.digits import MANIFEST_PATH, WeightsError, read_weights

    (tmp_path / "manifest.json").write_bytes(MANIFEST_PATH.read_bytes())  # the expected size
    path = tmp_path / "digits.safetensors"
    if kind == "dev-zero":
        path.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        with open(path, "wb") as f:
            f.truncate(2**40)  # 1 TiB of holes: no disk used
    for verify in (True, False):
        start = time.monotonic()
        with pytest.raises(WeightsError, match=r"not a regular file|longer than expected"):
            read_weights(path, verify=verify)
        assert time.monotonic() - start < 5


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("ascii", "not UTF-8 text"),
        ('{"num_train_timesteps": ' + "1" * 5000 + "}", "cannot be read as a scheduler config"),
        ("[" * 100_000 + "]" * 100_000, "cannot be read as a scheduler config"),
        ('{"_use_default_values": 5}', "_use_default_values=5 is invalid"),
        ('{"trained_betas": {"a": 0.1}, "num_train_timesteps": 1}', "trained_betas is a dict"),
        ('{"trained_betas": [[0.1], 0.2], "num_train_timesteps": 2}', "trained_betas is a ragged"),
        ('{"trained_betas": ["0.1", "0.2"], "num_train_timesteps": 2}', "trained_betas has dtype"),
    ],
    ids=["utf-16", "5000-digits", "deep-nesting", "use-default-values", "object", "ragged", "str"],
)
def test_a_hostile_config_file_is_one_error_that_names_the_file(tmp_path, content, fragment):
    """If this fails, a malformed scheduler_config.json raises a raw error (RecursionError,
    UnicodeDecodeError, TypeError) or one that does not name the file, or is accepted."""
    from kdpm2.scheduler import KDPM2AncestralDiscreteScheduler as Own

    path = tmp_path / "scheduler_config.json"
    if content == "ascii":
        path.write_text('{"eta": 1.0}', encoding="utf-16")
    else:
        path.write_text(content)
    with pytest.raises(ValueError, match=fragment) as info:
        Own.from_pretrained(tmp_path)
    assert str(info.value).startswith(str(path))


def test_an_oversized_config_file_is_refused_without_reading_it_whole(tmp_path, monkeypatch):
    """If this fails, a config file of any size is read and parsed whole."""
    import kdpm2.config
    from kdpm2.scheduler import KDPM2AncestralDiscreteScheduler as Own

    monkeypatch.setattr(kdpm2.config, "MAX_CONFIG_BYTES", 100)
    (tmp_path / "scheduler_config.json").write_text('{"eta": 1.0, "pad": "' + "x" * 200 + '"}')
    with pytest.raises(ValueError, match="larger than 0 MiB"):
        Own.from_pretrained(tmp_path)


def test_a_deeply_nested_config_value_is_a_value_error():
    """If this fails, trained_betas nested 100000 deep raises RecursionError from the config
    machinery instead of a ValueError that names the argument."""
    from kdpm2.scheduler import KDPM2AncestralDiscreteScheduler as Own

    nested: list = [0.1]
    for _ in range(100_000):
        nested = [nested]
    with pytest.raises(ValueError, match="trained_betas is nested too deeply"):
        Own(trained_betas=nested)


def test_a_file_protected_while_sampling_is_still_not_replaced(tmp_path):
    """If this fails, a file the user makes read-only after the start (but before the write)
    is replaced: the check must be repeated at the write."""
    png, npy = _old_outputs(tmp_path)
    npy.chmod(0o444)
    with pytest.raises(_io.OutputError, match=r"--npy .*: exists and is read-only"):
        _io.write_files_atomic([("--out", png, b"new picture"), ("--npy", npy, b"new numbers")])
    assert (png.read_bytes(), npy.read_bytes()) == (b"old picture", b"old numbers")
    assert _only(tmp_path, "x.png", "x.npy")


def test_without_hard_links_a_failed_pair_still_puts_the_first_file_back(tmp_path, monkeypatch):
    """If this fails, on a file system without hard links (or with a file at its link limit)
    a failed second rename leaves a new picture beside the old numbers."""
    png, npy = _old_outputs(tmp_path)

    def no_link(*args, **kwargs):
        raise OSError(31, "Too many links")

    real = os.replace

    def replace(src, dst):
        if Path(dst) == npy and Path(src).suffix == ".tmp":
            raise OSError(5, "Input/output error")
        return real(src, dst)

    monkeypatch.setattr(os, "link", no_link)
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(_io.OutputError, match="no output was changed"):
        _io.write_files_atomic([("--out", png, b"new picture"), ("--npy", npy, b"new numbers")])
    assert (png.read_bytes(), npy.read_bytes()) == (b"old picture", b"old numbers")
    assert _only(tmp_path, "x.png", "x.npy")


def test_long_and_too_long_output_names(tmp_path, capsys):
    """If this fails, a legal 244-byte file name cannot be written (a temporary name built from
    it is too long), or a name too long for the file system is a raw OSError."""
    legal = tmp_path / ("a" * 240 + ".png")
    assert (
        cli.main(["sample", "-q", "--num-samples", "2", "--steps", "1", "--out", str(legal)]) == 0
    )
    assert legal.is_file()
    too_long = tmp_path / ("b" * 300 + ".png")
    assert cli.main(["sample", "-q", "--out", str(too_long)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    assert err[0].startswith("kdpm2: error: --out ")
    assert "File name too long" in err[0]


def test_an_output_that_is_a_symlink_is_written_through(tmp_path):
    """If this fails, --out naming a symbolic link replaces the link with a file (its target
    keeps the old picture) instead of writing the target, as opening the path would."""
    target = tmp_path / "real" / "x.png"
    target.parent.mkdir()
    target.write_bytes(b"old picture")
    link = tmp_path / "link.png"
    link.symlink_to(target)
    assert cli.main(["sample", "-q", "--num-samples", "2", "--steps", "1", "--out", str(link)]) == 0
    assert link.is_symlink()
    assert target.read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.png"]
