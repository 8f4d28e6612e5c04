"""kdpm2 works where torch cannot be imported, and never imports torch (or diffusers) itself."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_numpy_loop_with_torch_blocked():
    """Import + a full NumPy loop + the functional sampler succeed with torch unimportable."""
    proc = _run(
        """
        import sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        import numpy as np
        import kdpm2
        sch = kdpm2.KDPM2AncestralDiscreteScheduler()
        sch.set_timesteps(10)
        assert isinstance(sch.timesteps, np.ndarray), type(sch.timesteps)
        rng = np.random.default_rng(0)
        x = (float(sch.init_noise_sigma) * rng.standard_normal((2, 3))).astype(np.float32)
        for t in sch.timesteps:
            x = sch.step(np.tanh(sch.scale_model_input(x, t)), t, x, generator=rng).prev_sample
        assert x.dtype == np.float32 and np.isfinite(x).all()
        sig = kdpm2.get_sigmas_karras(5, 0.1, 10.0)
        y = kdpm2.sample_dpm_2_ancestral(
            lambda x, s: 0.5 * x, 10 * np.ones((2, 2)), sig, disable=True
        )
        assert np.isfinite(y).all()
        # device="cpu" is what k-diffusion code passes; without torch it means NumPy
        sch.set_timesteps(5, device="cpu")
        assert isinstance(sch.timesteps, np.ndarray), type(sch.timesteps)
        cpu = kdpm2.get_sigmas_karras(5, 0.1, 10.0, device="cpu")
        assert isinstance(cpu, np.ndarray) and cpu.tolist() == sig.tolist()
        try:
            kdpm2.get_sigmas_karras(5, 0.1, 10.0, device="cuda")
        except ImportError as e:
            assert "needs torch" in str(e), e
        else:
            raise AssertionError("device='cuda' without torch must say torch is needed")
        print("ok")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_import_does_not_load_heavy_modules():
    """`import kdpm2` loads neither torch nor diffusers (each costs seconds and is optional)."""
    proc = _run(
        """
        import sys
        import kdpm2
        heavy = [m for m in ("torch", "diffusers", "scipy", "tqdm") if m in sys.modules]
        print(",".join(heavy))
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""
