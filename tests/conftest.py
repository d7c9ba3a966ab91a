"""Shared test fixtures: a nested parameter tree and a deterministic gradient stream."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _pytest.mark.structures import ParameterSet
from hypothesis import settings

# The default run draws the same examples every time, so a red CI means a change broke
# something; exploring new examples is the fuzz target's job (GRADTX_FUZZ=1), or set
# HYPOTHESIS_PROFILE=explore to randomise every property test.
settings.register_profile("default", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE", "explore" if os.environ.get("GRADTX_FUZZ") else "default")
)

# The default run (CI's, the README's command) keeps every feature tested in every form it
# has; GRADTX_SLOW=1 runs the whole suite, adding the repetitions that cost most of its time:
# tests marked `slow` (the heavy examples and guide pages, the kernel rebuild, the mesh cases
# of most learners; slow_where marks parameters, and sampled all but every k-th learner of
# the per-learner checks that each cost a compilation per case), the no-jit halves of the
# long comparisons in WITHOUT_JIT_IS_SLOW (their jitted halves run by default), and more
# hypothesis examples (examples()).
SLOW = bool(os.environ.get("GRADTX_SLOW"))
WITHOUT_JIT_IS_SLOW = {"test_adam_relatives", "test_adam_variants", "test_complex",
                       "test_large_batch", "test_lr_free", "test_multi_steps", "test_muon",
                       "test_optax_schedules", "test_optax_wrappers", "test_packing",
                       "test_sam", "test_schedule_free", "test_sign_family", "test_sophia",
                       "test_torch_optim_muon"}  # fmt: skip


def examples(n: int) -> int:
    """``n`` hypothesis examples in the whole suite, a third of them (at least 1) by default."""
    return n if SLOW else max(1, n // 3)


def slow_where(values, is_slow):
    """``values`` as pytest parameters, those for which ``is_slow`` holds marked ``slow``."""
    return [pytest.param(v, marks=pytest.mark.slow) if is_slow(v) else v for v in values]


def sampled(values, keep: int = 2, offset: int = 0):
    """``values`` as pytest parameters: by default those at ``offset``, ``offset + keep``, ...,
    the others marked ``slow``. For checks repeated per learner at a compilation per case,
    whose learners the other tests cover too; tests of one module take turns at ``offset``
    so that each learner meets some of them by default."""
    out = []
    for i, v in enumerate(values):
        if i % keep == offset % keep:
            out.append(v)
        elif isinstance(v, ParameterSet):
            out.append(pytest.param(*v.values, marks=[*v.marks, pytest.mark.slow], id=v.id))
        else:
            out.append(pytest.param(v, marks=pytest.mark.slow))
    return out


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: run only in the whole suite (GRADTX_SLOW=1)")


def pytest_collection_modifyitems(config, items):
    if SLOW:
        return
    skip = pytest.mark.skip(reason="in the whole suite only: set GRADTX_SLOW=1")
    for item in items:
        module = item.module.__name__.rpartition(".")[2] if item.module else ""
        if item.get_closest_marker("slow") or (
            item.name.endswith("__without_jit") and module in WITHOUT_JIT_IS_SLOW
        ):
            item.add_marker(skip)


SHAPES = {"dense": [(4, 3), (3,)], "conv": [(2, 3, 3, 2)], "head": [(), (5,)]}


def make_params(seed: int = 0, dtype=jnp.float32):
    """A dict of lists of arrays of several shapes, scalar included."""
    rng = np.random.default_rng(seed)
    return {
        k: [jnp.asarray(rng.normal(size=s), dtype=dtype) for s in shapes]
        for k, shapes in SHAPES.items()
    }


def grads_at(params, step: int):
    """Gradients that depend on the params (a quadratic pull to 0) plus per-step noise."""
    leaves, treedef = jax.tree.flatten(params)
    rng = np.random.default_rng(1000 + step)
    noise = [rng.normal(size=np.shape(x)).astype(np.float32) for x in leaves]
    grads = [(0.5 * p + n).astype(jnp.result_type(p)) for p, n in zip(leaves, noise, strict=True)]
    return jax.tree.unflatten(treedef, grads)


def run(opt, params, steps: int = 20, update=None):
    """Apply ``steps`` updates of ``opt`` with gradients from :func:`grads_at`; return params."""
    update = update or opt.update
    state = opt.init(params)
    for t in range(steps):
        updates, state = update(grads_at(params, t), state, params)
        params = jax.tree.map(lambda p, u: (p + u).astype(p.dtype), params, updates)
    return params


def assert_trees_close(a, b, rtol=1e-6, atol=1e-7):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=atol), a, b)


def assert_vmap_equals_loop(train, values, rtol=1e-6, atol=1e-7):
    """``jax.vmap(train)`` over ``values`` gives, slice by slice, the unbatched jitted run."""
    values = jnp.asarray(values)
    batched = jax.jit(jax.vmap(train))(values)
    single = jax.jit(train)
    for i, v in enumerate(values):
        assert_trees_close(
            jax.tree.map(lambda x, i=i: x[i], batched), single(v), rtol=rtol, atol=atol
        )


def load_script(path: Path):
    """A script that is not part of a package (an example, a docs/ helper), imported by path."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
