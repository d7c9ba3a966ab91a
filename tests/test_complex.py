"""Complex parameters: every learner and block against optax, and clear errors where none applies.

optax's rule for a complex leaf: first moments are complex, second moments are
:math:`g\\bar g` (real), and the updates keep the params' dtype. gradtx stores
the real second moments in the real dtype (float32 for complex64); the numbers
are optax's. A transform with no complex rule (a sign rule, CNTK's learners)
raises naming the leaf instead of handing the gradient back as the update,
which used to send complex params uphill.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized
from conftest import assert_vmap_equals_loop

import gradtx
from gradtx import cntk as C

STEPS = 50


def params():
    rng = np.random.default_rng(3)
    return {
        "z": jnp.asarray(rng.normal(size=(3, 2)) + 1j * rng.normal(size=(3, 2)), jnp.complex64),
        "w": jnp.asarray(rng.normal(size=4), jnp.float32),
    }


def gradient(p, t):
    """A pull towards 1 + 1j (the conjugate gradient of |p - target|^2, as optax's tests use)."""
    rng = np.random.default_rng([11, t])
    noise = {
        "z": jnp.asarray(rng.normal(size=(3, 2)) + 1j * rng.normal(size=(3, 2)), jnp.complex64),
        "w": jnp.asarray(rng.normal(size=4), jnp.float32),
    }
    target = {"z": 1 + 1j, "w": 1.0}
    return jax.tree.map(lambda x, n, c: (x - c) + 0.1 * n, p, noise, target)


def run(opt, update, steps=STEPS):
    p = params()
    state = opt.init(p)
    for t in range(steps):
        u, state = update(gradient(p, t), state, p)
        p = optax.apply_updates(p, u)
    return p, state, u


def namesakes(factory, *args, **kwargs):
    """gradtx's and optax's transform of the same name, built with the same arguments."""
    return (
        lambda: getattr(gradtx, factory)(*args, **kwargs),
        lambda: getattr(optax, factory)(*args, **kwargs),
    )


PAIRS = [
    ("sgd", *namesakes("sgd", 0.05)),
    ("sgd_momentum", *namesakes("sgd", 0.05, 0.9)),
    ("sgd_nesterov", *namesakes("sgd", 0.05, 0.9, True)),
    ("adam", *namesakes("adam", 0.05)),
    ("adam_eps_root", *namesakes("adam", 0.05, eps_root=1e-8)),
    ("adamw", *namesakes("adamw", 0.05, weight_decay=0.1)),
    ("nadam", *namesakes("nadam", 0.05)),
    ("amsgrad", *namesakes("amsgrad", 0.05)),
    ("adamax", *namesakes("adamax", 0.05)),
    ("adagrad", *namesakes("adagrad", 0.5)),
    ("rmsprop", *namesakes("rmsprop", 0.01)),
    ("rmsprop_centered_momentum", *namesakes("rmsprop", 0.01, centered=True, momentum=0.9)),
    (
        "clip_adam",
        lambda: gradtx.chain(gradtx.clip_by_global_norm(0.5), gradtx.adam(0.05)),
        lambda: optax.chain(optax.clip_by_global_norm(0.5), optax.adam(0.05)),
    ),
    ("scale_by_adam", *namesakes("scale_by_adam")),
    ("scale_by_amsgrad", *namesakes("scale_by_amsgrad")),
    ("scale_by_adamax", *namesakes("scale_by_adamax")),
    ("scale_by_rms", *namesakes("scale_by_rms")),
    ("scale_by_stddev", *namesakes("scale_by_stddev")),
    ("scale_by_rss", *namesakes("scale_by_rss")),
    ("trace", *namesakes("trace", 0.9, True)),
    ("ema", *namesakes("ema", 0.9)),
    ("add_decayed_weights", *namesakes("add_decayed_weights", 0.1)),
    ("scale", *namesakes("scale", -0.1)),
    ("clip_by_global_norm", *namesakes("clip_by_global_norm", 1.0)),
]


class ComplexMatchesOptax(chex.TestCase, parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*PAIRS)
    def test_fifty_steps(self, ours, theirs):
        mine, state, u = run(ours(), self.variant(ours().update))
        expected, _, _ = run(theirs(), theirs().update)
        for key in mine:
            np.testing.assert_allclose(mine[key], expected[key], rtol=1e-6, atol=1e-7)
        assert u["z"].dtype == jnp.complex64 and u["w"].dtype == jnp.float32
        assert mine["z"].dtype == jnp.complex64
        # Second moments of a complex leaf are real: stored in its real dtype.
        for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
            name = jax.tree_util.keystr(path)
            if any(f".{f}" in name for f in ("nu", "nu_max", "sum_of_squares")) and "'z'" in name:
                assert leaf.dtype == jnp.float32, (name, leaf.dtype)


def test_a_complex_step_goes_downhill_where_it_used_to_go_uphill():
    # optax's parabola test: |p - (1+1j) t|^2 from p = (-1, 10, 1), conjugated gradients.
    target = jnp.array([1.0, -1.0, 1.0], jnp.complex64) * (1 + 1j)
    objective = lambda p: jnp.sum(jnp.abs(p - target) ** 2)  # noqa: E731
    for opt in (
        gradtx.sgd(0.1),
        gradtx.adam(0.1),
        gradtx.rmsprop(0.05),
        gradtx.adamw(0.1, weight_decay=0.0),
    ):

        @jax.jit
        def step(p, state, opt=opt):
            u, state = opt.update(jnp.conj(jax.grad(objective)(p)), state, p)
            return gradtx.apply_updates(p, u), state

        p = jnp.array([-1.0, 10.0, 1.0], jnp.complex64)
        state = opt.init(p)
        for _ in range(1000):
            p, state = step(p, state)
        np.testing.assert_allclose(p, target, atol=1e-2)
    # The first SGD step is -lr * g exactly (it was +g: a full step uphill).
    g = jnp.array([0.5 + 0.5j], jnp.complex64)
    u, _ = gradtx.sgd(0.1).update(g, gradtx.sgd(0.1).init(g), g)
    np.testing.assert_array_equal(u, -0.1 * g)


def test_vmap_over_learning_rates_on_complex_params():
    def train(lr):
        return run(gradtx.adam(lr), gradtx.adam(lr).update, steps=10)[0]

    assert_vmap_equals_loop(train, [1e-3, 3e-2, 0.1])


def test_global_norm_of_a_complex_tree_is_optaxs():
    p = params()
    np.testing.assert_allclose(gradtx.tree.global_norm(p), optax.tree.norm(p), rtol=1e-6)
    big = jax.tree.map(lambda x: x * 1e30, p)  # squares overflow: the rescaled branch
    expected = 1e30 * np.sqrt(
        sum(np.sum(np.abs(np.asarray(x, np.complex128)) ** 2) for x in jax.tree.leaves(p))
    )
    np.testing.assert_allclose(gradtx.tree.global_norm(big), expected, rtol=1e-5)


NO_COMPLEX_RULE = {
    "lion": lambda: gradtx.lion(1e-3),
    "adadelta": lambda: gradtx.adadelta(1.0),
    "scale_by_lion": lambda: gradtx.scale_by_lion(),
    "scale_by_adadelta": lambda: gradtx.scale_by_adadelta(),
    "clip": lambda: gradtx.clip(1.0),
    "scale_by_rms_sign_steps": lambda: gradtx.scale_by_rms_sign_steps(0.9, 1.2, 0.7, 10, 0.1),
    "scale_by_fsadagrad": lambda: gradtx.scale_by_fsadagrad(0.99),
    "scale_by_minibatch_adam": lambda: gradtx.scale_by_minibatch_adam(0.9, 0.999),
    "cntk.sgd": lambda: C.sgd(0.1),
    "cntk.momentum_sgd": lambda: C.momentum_sgd(0.1, 0.9),
    "cntk.nesterov": lambda: C.nesterov(0.1, 0.9),
    "cntk.adagrad": lambda: C.adagrad(0.1),
    "cntk.rmsprop": lambda: C.rmsprop(0.1, 0.9, 1.2, 0.7, 10.0, 0.1),
    "cntk.fsadagrad": lambda: C.fsadagrad(0.1, 0.9),
    "cntk.adam": lambda: C.adam(0.1, 0.9),
    "cntk.adadelta": lambda: C.adadelta(),
}


@pytest.mark.parametrize("name", sorted(NO_COMPLEX_RULE))
def test_a_transform_without_a_complex_rule_names_the_leaf(name):
    p = params()
    tx = NO_COMPLEX_RULE[name]()
    match = r"the leaf at \['z'\] is complex64"
    with pytest.raises(ValueError, match=match):
        tx.update(gradient(p, 0), tx.init(p), p, batch_size=4)
    # Built on real params, a complex gradient is refused too: never handed back as an update.
    real = {"z": jnp.zeros((3, 2)), "w": p["w"]}
    with pytest.raises(ValueError, match=match):
        tx.update(gradient(p, 0), tx.init(real), p, batch_size=4)


def test_a_real_state_dtype_for_complex_moments_names_the_leaf():
    with pytest.raises(
        ValueError,
        match=r"state_dtype=bfloat16 cannot hold the complex moments of the leaf at \['z'\]",
    ):
        gradtx.adam(1e-3, state_dtype=jnp.bfloat16).init(params())
    # Second moments are real, so a real state dtype holds RMSProp's.
    state = gradtx.rmsprop(1e-3, state_dtype=jnp.bfloat16).init(params())
    assert jax.tree.leaves(state)[0].dtype == jnp.bfloat16


def test_integer_bool_and_float0_leaves_are_left_alone():
    p = {"z": params()["z"], "steps": jnp.int32(3), "flag": jnp.array(True)}
    grads = jax.grad(lambda q: jnp.sum(jnp.abs(q["z"]) ** 2), allow_int=True)(p)
    opt = gradtx.adam(0.1)
    u, _ = opt.update(grads, opt.init(p), p)
    new = gradtx.apply_updates(p, u)
    assert new["steps"] == 3 and new["flag"] and new["z"].dtype == jnp.complex64
    assert u["steps"].dtype == jax.dtypes.float0
