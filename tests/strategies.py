"""Shared Hypothesis strategies: scheduler configs, step counts, sigma pairs, batch shapes."""

from __future__ import annotations

from hypothesis import strategies as st

beta_schedules = st.sampled_from(["linear", "scaled_linear", "squaredcos_cap_v2"])
spacings = st.sampled_from(["linspace", "leading", "trailing"])
sigma_kinds = st.sampled_from([None, "karras", "exponential", "beta"])
prediction_types = st.sampled_from(["epsilon", "v_prediction", "sample"])


@st.composite
def configs(draw, *, max_train=10000):
    """A valid scheduler config (as a dict of constructor arguments)."""
    t = draw(st.integers(1, max_train))
    cfg = {
        "num_train_timesteps": t,
        "beta_schedule": draw(beta_schedules),
        "timestep_spacing": draw(spacings),
        "steps_offset": draw(st.integers(0, 1) | st.integers(0, t)),
        "prediction_type": draw(prediction_types),
        "eta": draw(st.sampled_from([0.0, 0.5, 1.0])),
        "discard_penultimate_sigma": draw(st.booleans()),
    }
    # the usual range, or any magnitude down to the smallest beta float32 resolves (1e-7)
    start = draw(st.floats(1e-5, 0.02) | st.floats(-7.0, -0.31).map(lambda e: 10.0**e))
    cfg["beta_start"] = start
    cfg["beta_end"] = draw(st.floats(start, max(start, 0.05)) | st.floats(start, 0.999))
    if draw(st.booleans()) and t > 1:
        # explicit betas: a random smooth curve between the drawn ends (lists of up to 10000
        # floats drawn one by one would make the search slow without finding more)
        power = draw(st.floats(0.5, 3.0))
        ramp = [(i / (t - 1)) ** power for i in range(t)]
        cfg["trained_betas"] = [start + (cfg["beta_end"] - start) * r for r in ramp]
    kind = draw(sigma_kinds)
    if kind:
        cfg[f"use_{kind}_sigmas"] = True
    return cfg


@st.composite
def config_and_steps(draw, *, max_train=10000, max_steps=10000):
    """A config and a step count its spacing supports."""
    cfg = draw(configs(max_train=max_train))
    if cfg["num_train_timesteps"] < 2 and cfg["timestep_spacing"] != "linspace":
        cfg["discard_penultimate_sigma"] = False  # N + 1 = 2 distinct steps cannot exist
    limit = cfg["num_train_timesteps"] - (1 if cfg["discard_penultimate_sigma"] else 0)
    if cfg["timestep_spacing"] == "linspace":
        limit = max_steps
    n = draw(st.integers(1, max(1, min(max_steps, limit))))
    return cfg, n


sigma_pairs = st.tuples(st.floats(1e-3, 1e3), st.floats(0.0, 1.0)).map(
    lambda p: (p[0], p[0] * p[1])
)
batch_shapes = st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(1, 5))
