"""`kdpm2 sample` under torch.distributed's launcher: 2 and 3 processes give 1 process's bits.

Each test starts `python -m torch.distributed.run --standalone` (what `torchrun` runs) on the
loopback interface with gloo, and compares with a single-process run made in this process.
A launch costs a few seconds (every worker imports torch), so there are few of them, each
with several blocks of samples and 2 sampler steps.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from kdpm2 import cli
from tests.conftest import one_process_env

torch = pytest.importorskip("torch")
pytest.importorskip("torch.distributed")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("this torch build has no gloo backend", allow_module_level=True)

SRC = Path(__file__).resolve().parents[1] / "src"
# 700 samples = blocks of 256, 256 and 188: 2 processes split them 512 + 188, 3 processes
# 256 + 256 + 188 (uneven, as the split allows).
NUM_SAMPLES = 700
ARGS = ["--num-samples", str(NUM_SAMPLES), "--steps", "2", "--seed", "3", "-q"]


def _env():
    # loopback only; one thread per process, as torchrun gives each worker
    return one_process_env(MASTER_ADDR="127.0.0.1", GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")


def torchrun(nproc, target, *args, cwd):
    """Run `torchrun --standalone --nproc-per-node nproc TARGET ARGS` and return the result."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command = [*launcher, "--nproc-per-node", str(nproc), *target, *map(str, args)]
    return subprocess.run(
        command, capture_output=True, text=True, env=_env(), timeout=300, check=False, cwd=cwd
    )


def _console_script(tmp_path):
    """The `kdpm2` console script of this environment, or an equivalent one (a script path, as
    in `torchrun ... $(which kdpm2) sample`)."""
    installed = Path(sys.executable).parent / "kdpm2"
    if installed.is_file():
        return installed
    script = tmp_path / "kdpm2"
    script.write_text("import sys\nfrom kdpm2.cli import main\nsys.exit(main())\n")
    return script


def _single(backend, tmp_path):
    npy = tmp_path / f"single-{backend}.npy"
    argv = ["sample", *ARGS, "--backend", backend, "--batch-size", "300"]
    assert cli.main([*argv, "--out", str(tmp_path / "single.png"), "--npy", str(npy)]) == 0
    return np.load(npy)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_two_and_three_processes_equal_one_bit_for_bit(backend, tmp_path):
    """If this fails, a shared run differs from one process: a shard drew other samples, the
    gather lost the order, or several processes wrote (or none did). The 2-process run starts
    the console script by path, the 3-process one `--module kdpm2`."""
    single = _single(backend, tmp_path)
    for nproc, target in ((2, [str(_console_script(tmp_path))]), (3, ["--module", "kdpm2"])):
        out = tmp_path / f"p{nproc}"
        out.mkdir()
        result = torchrun(
            nproc, target, "sample", *ARGS[:-1], "--backend", backend,
            "--out", out / "x.png", "--npy", out / "x.npy", cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        # rank 0 alone wrote, once, and said how many processes shared the work
        summaries = [line for line in result.stdout.splitlines() if line.startswith("wrote ")]
        assert [f"{nproc} processes sharing the work"] == [s.split(", ")[3] for s in summaries], (
            result.stdout
        )
        assert sorted(p.name for p in out.iterdir()) == ["x.npy", "x.png"]
        np.testing.assert_array_equal(single, np.load(out / "x.npy"), err_msg=f"{nproc}")
        png = (tmp_path / "single.png").read_bytes()
        assert png == (out / "x.png").read_bytes()


def test_a_failing_process_stops_the_run_with_its_one_line_error(tmp_path):
    """If this fails, a process that fails (here rank 1 of 2 finds its weights file damaged)
    hangs the run, exits 0, prints a traceback of ours, or leaves a file behind."""
    bad = tmp_path / "digits.safetensors"
    bad.write_bytes(b"0" * 10)
    (tmp_path / "manifest.json").write_text(
        '{"files": {"digits.safetensors": {"sha256": "00", "size": 5}}}'
    )
    script = tmp_path / "damaged_rank1.py"
    script.write_text(
        "import os, sys\n"
        "import kdpm2.demo.digits as digits\n"
        "from kdpm2.cli import main\n"
        "if os.environ['RANK'] == '1':\n"
        f"    digits.WEIGHTS_PATH = digits.Path({str(bad)!r})\n"
        "sys.exit(main())\n"
    )
    out = tmp_path / "out"
    out.mkdir()
    result = torchrun(
        2, [str(script)], "sample", *ARGS, "--out", out / "x.png", "--npy", out / "x.npy",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode != 0
    ours = [line for line in result.stderr.splitlines() if line.startswith("kdpm2:")]
    assert len(ours) == 1, result.stderr
    assert ours[0].startswith(
        f"kdpm2: error: rank 1 of 2: the digits weights file {bad} is longer than expected"
    )
    assert f'File "{SRC}' not in result.stderr  # no traceback through our code
    # torchrun's summary names rank 1 as the root cause, with our line
    assert f"traceback : rank 1 of 2: the digits weights file {bad}" in result.stderr
    assert list(out.iterdir()) == []


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("rank", [0, 1])
def test_a_lone_rank_gives_up_after_its_timeout_with_one_line(tmp_path, rank):
    """If this fails, a process whose peers never come waits silently (torch's default is 30
    minutes), its message does not say whom it waited for and where, or torch's connection
    logs bury it (rank 1 retries the connection to rank 0's store)."""
    env = _env()
    port = _free_port()
    env.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK="0", MASTER_PORT=str(port))
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "kdpm2", "sample", "-q", "--timeout", "3",
         "--out", str(tmp_path / "x.png")],
        capture_output=True, text=True, env=env, timeout=120, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert time.monotonic() - start < 60
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(
        f"kdpm2: error: rank {rank} of 2: could not join the other 1 process(es) at "
        f"127.0.0.1:{port} within 3 s"
    ), lines
    assert list(tmp_path.iterdir()) == []


def _node(rank, port, out, *extra):
    """One of two simulated machines: a torchrun launcher with 1 process, rendezvous on
    127.0.0.1 (what `torchrun --nnodes 2 --node-rank R --rdzv-endpoint host0:port` does)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
               "--node-rank", str(rank), "--nproc-per-node", "1", "--rdzv-backend", "c10d",
               "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "kdpm2-test",
               "--module", "kdpm2", "sample", *ARGS, "--out", str(out / "x.png"),
               "--npy", str(out / "x.npy"), *extra]  # fmt: skip
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
        cwd=out,
    )  # fmt: skip


@pytest.mark.slow
def test_two_machines_simulated_on_one_give_the_single_process_bits(tmp_path):
    """If this fails, a run across two launchers (as on two machines) draws other samples than
    one process, or both machines write."""
    single = _single("numpy", tmp_path)
    port = _free_port()
    outs = [tmp_path / "node0", tmp_path / "node1"]
    for out in outs:
        out.mkdir()
    nodes = [_node(rank, port, out) for rank, out in enumerate(outs)]
    results = [node.communicate(timeout=300) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], [r[1][-2000:] for r in results]
    np.testing.assert_array_equal(single, np.load(outs[0] / "x.npy"))
    assert list(outs[1].iterdir()) == []  # only rank 0's machine writes


def _kill_everything_in(folder):
    """Kill every process whose working directory is ``folder``: a machine that dies."""
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and os.readlink(proc / "cwd") == str(folder):
                os.kill(int(proc.name), signal.SIGKILL)
        except OSError:
            pass


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="finds processes through /proc")
def test_a_killed_machine_ends_the_other_with_an_error_and_no_file(tmp_path):
    """If this fails, the surviving machine of a two-machine run hangs after its peer died
    (launcher and worker killed), exits 0, or writes a partial result. It notices at its next
    meeting point with the others: the end of its shard, or --timeout seconds after it."""
    port = _free_port()
    outs = [tmp_path / "node0", tmp_path / "node1"]
    for out in outs:
        out.mkdir()
    long = ("--num-samples", "30000", "--steps", "30", "--timeout", "20")
    nodes = [_node(rank, port, out, *long) for rank, out in enumerate(outs)]
    time.sleep(12)  # both have joined and are sampling
    _kill_everything_in(outs[1])
    nodes[1].communicate(timeout=60)
    _, err = nodes[0].communicate(timeout=300)
    assert nodes[0].returncode != 0, err[-2000:]
    # our line if node 0's worker met the loss, torchrun's if its launcher did first (the
    # rendezvous store may live on either launcher when both run on one host)
    assert ("rank 0 of 2: lost contact with the other processes" in err) or (
        "RendezvousConnectionError" in err
    ), err[-2000:]
    assert list(outs[0].iterdir()) == []
