"""Muon (gradtx.contrib.muon, scale_by_muon) against optax.contrib and a NumPy Newton-Schulz.

optax 0.2.8 is the oracle: 50 steps on conftest's nested tree (a 4x3 matrix, a
(2, 3, 3, 2) kernel, vectors and a scalar), with and without jit, at the defaults and
with every argument moved off its default. gradtx's one departure, Muon on kernels of
rank above 2 by default, is checked against optax given the same dimension numbers
explicitly, and against a NumPy Newton-Schulz written here; a small conv net on
scikit-learn's digits shows it training better than AdamW alone.
"""

from __future__ import annotations

import functools
import inspect
import sys
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized
from conftest import assert_trees_close, assert_vmap_equals_loop, grads_at, make_params
from test_complex import gradient as complex_gradient
from test_complex import params as complex_params

import gradtx
import gradtx.testing
from gradtx.learners.muon import muon
from gradtx.transforms.muon import (
    MuonDimensionNumbers,
    MuonState,
    orthogonalize_via_newton_schulz,
    scale_by_muon,
    scale_by_shape,
)

STEPS = 50
BF16 = jnp.bfloat16
OMDN = optax.contrib.MuonDimensionNumbers
RTOL, ATOL = 1e-5, 1e-6


def _lr_schedule(count):
    return 0.02 * 0.97 ** count.astype(jnp.float32)


def _adam_lr_schedule(count):
    return 0.01 * jnp.minimum(1.0, (count + 1) / 10)


def _wd_schedule(count):
    return 0.1 * jnp.minimum(1.0, (count + 1) / 10)


def _our_default_rule(dims_type):
    """gradtx's default as explicit dimension numbers: matrices (0, 1), kernels of
    higher rank (all axes but the last, the last), the rest None (AdamW)."""

    def dims(params):
        def one(x):
            if x.ndim < 2:
                return None
            return dims_type(0, 1) if x.ndim == 2 else dims_type(tuple(range(x.ndim - 1)), -1)

        return jax.tree.map(one, params)

    return dims


# The conv kernel (2, 3, 3, 2) as a batch of two (3 x 3, 2) matrices: axis 0 is a batch axis.
def _explicit_dims(dims_type):
    return {
        "dense": [dims_type(), None],
        "conv": [dims_type(reduction_axis=(1, 2), output_axis=3)],
        "head": None,  # a prefix: the whole subtree goes to AdamW
    }


_OPTAX_RULE = dict(orthogonalize_higher_rank=False)
DECAY_MASK = {"dense": [True, False], "conv": False, "head": [False, False]}  # a prefix

# name -> (arguments for both, gradtx-only arguments, optax-only arguments).
CASES = {
    "defaults, optax's rank rule": ((_lr_schedule,), _OPTAX_RULE, {}),
    # gradtx's default: optax given the same rule as explicit dimension numbers.
    "defaults": ((_lr_schedule,), {}, {}),
    "arguments": (
        (0.02, "dion", 5, 0.9, 1e-6, _wd_schedule, DECAY_MASK),
        {},
        {},
    ),
    "keyword arguments": (
        (0.02,),
        dict(
            nesterov=False, adaptive=True, adam_b1=0.8, adam_b2=0.99, adam_eps_root=1e-9,
            adam_weight_decay=0.05, adam_learning_rate=_adam_lr_schedule, consistent_rms=0.2,
        ),
        {},
    ),
    "triples": ((0.02, ((3.0, -3.2, 1.2), (3.4445, -4.775, 2.0315), (2.0, -1.5, 0.5)), 4), {}, {}),
    "dimension numbers": ((0.02,), dict(muon_weight_dimension_numbers=_explicit_dims(
        MuonDimensionNumbers)), dict(muon_weight_dimension_numbers=_explicit_dims(OMDN))),
    "dimension numbers function": ((0.02,), dict(
        muon_weight_dimension_numbers=lambda p: _explicit_dims(MuonDimensionNumbers)),
        dict(muon_weight_dimension_numbers=lambda p: _explicit_dims(OMDN))),
}  # fmt: skip
for name in ("spectral", "aol", "schatten"):
    CASES[name] = ((0.02,), dict(preconditioning=name), {})
WITHOUT_JIT = ("defaults", "arguments", "keyword arguments")


@functools.cache
def _pair(name):
    """gradtx's and optax's muon; where gradtx's default rule gives the kernel to Muon,
    optax gets the same rule as explicit dimension numbers."""
    args, ours_only, theirs_only = CASES[name]
    theirs = {k: v for k, v in ours_only.items() if k != "orthogonalize_higher_rank"}
    if (
        "orthogonalize_higher_rank" not in ours_only
        and "muon_weight_dimension_numbers" not in ours_only
    ):
        theirs["muon_weight_dimension_numbers"] = _our_default_rule(OMDN)
    ours = muon(*args, **ours_only)
    return ours, optax.contrib.muon(*args, **{**theirs, **theirs_only})


def _run(tx, update, params, steps=STEPS, gradient=grads_at):
    state = tx.init(params)
    for t in range(steps):
        u, state = update(gradient(params, t), state, params)
        params = optax.apply_updates(params, u)
    return params, state


def _run_both(variant, ours, theirs, params, gradient=grads_at):
    """gradtx's run under the variant; optax's jitted (eager, it takes 0.4 s a step)."""
    return (
        _run(ours, variant(ours.update), params, gradient=gradient),
        _run(theirs, jax.jit(theirs.update), params, gradient=gradient),
    )


@functools.cache
def _optax_run(name):
    theirs = _pair(name)[1]
    return _run(theirs, jax.jit(theirs.update), make_params())


def _muon_state(state):
    return state.inner_states["muon"].inner_state[0]


class MatchesOptax(chex.TestCase, parameterized.TestCase):
    @chex.variants(with_jit=True)
    @parameterized.named_parameters(*((n, n) for n in CASES))
    def test_fifty_steps(self, name):
        self._fifty_steps(name)

    @chex.variants(without_jit=True)
    @parameterized.named_parameters(*((n, n) for n in WITHOUT_JIT))
    def test_fifty_steps_eager(self, name):
        self._fifty_steps(name)

    def _fifty_steps(self, name):
        ours = _pair(name)[0]
        (p1, s1), (p2, s2) = _run(ours, self.variant(ours.update), make_params()), _optax_run(name)
        assert_trees_close(p1, p2, rtol=RTOL, atol=ATOL)
        # optax's state, field for field: state.inner_states['muon'].inner_state[0].mu ports.
        m1, m2 = _muon_state(s1), _muon_state(s2)
        assert type(m1).__name__ == type(m2).__name__ == "MuonState"
        assert m1._fields == m2._fields
        assert_trees_close(jax.tree.leaves(m1), jax.tree.leaves(m2), rtol=RTOL, atol=ATOL)
        assert_trees_close(
            jax.tree.leaves(s1.inner_states["adam"]),
            jax.tree.leaves(s2.inner_states["adam"]),
            rtol=RTOL,
            atol=ATOL,
        )

    @chex.variants(with_jit=True)
    def test_matrices_only_leaves_adamw_idle(self):
        params = {"a": make_params()["dense"][0], "b": jnp.ones((3, 5))}
        (p1, _), (p2, _) = _run_both(self.variant, muon(0.02), optax.contrib.muon(0.02), params)
        assert_trees_close(p1, p2, rtol=RTOL, atol=ATOL)

    @chex.variants(with_jit=True)
    def test_scale_by_muon_block(self):
        """optax's scale_by_muon with no dimension numbers fails on any tree but a single
        array (it maps over the updates and None); it is given them explicitly here."""
        params = {"a": make_params()["dense"][0], "b": jnp.ones((3, 5))}
        args = dict(ns_coeffs=(3.0, -3.2, 1.2), ns_steps=4, beta=0.8, eps=1e-6, adaptive=True)
        ours = gradtx.chain(scale_by_muon(**args, nesterov=False), gradtx.scale(-0.01))
        dims = {"a": OMDN(), "b": OMDN()}
        theirs = optax.chain(
            optax.contrib.scale_by_muon(**args, nesterov=False, weight_dimension_numbers=dims),
            optax.scale(-0.01),
        )
        (p1, s1), (p2, s2) = _run_both(self.variant, ours, theirs, params)
        assert_trees_close(p1, p2, rtol=RTOL, atol=ATOL)
        assert_trees_close(tuple(s1[0]), tuple(s2[0]), rtol=RTOL, atol=ATOL)
        with pytest.raises(ValueError, match="pytree structure"):
            optax.contrib.scale_by_muon().update(params, optax.contrib.scale_by_muon().init(params))

    @chex.variants(with_jit=True)
    def test_mu_dtype_bfloat16(self):
        self._mu_dtype_bfloat16(jax.jit, STEPS)

    @chex.variants(without_jit=True)
    def test_mu_dtype_bfloat16_eager(self):
        """Eager and jitted bfloat16 arithmetic round differently (XLA keeps ``beta * mu``
        in float32 under jit), in optax as in gradtx: eager against eager, 8 steps (optax
        takes 0.4 s an eager step)."""
        self._mu_dtype_bfloat16(lambda f: f, 8)

    def _mu_dtype_bfloat16(self, oracle_variant, steps):
        ours = muon(0.02, mu_dtype=BF16, orthogonalize_higher_rank=False)
        theirs = optax.contrib.muon(0.02, mu_dtype=BF16)
        p1, s1 = _run(ours, self.variant(ours.update), make_params(), steps)
        p2, s2 = _run(theirs, oracle_variant(theirs.update), make_params(), steps)
        assert _muon_state(s1).mu["dense"][0].dtype == BF16
        assert s1.inner_states["adam"].inner_state[0].mu["dense"][1].dtype == BF16
        assert_trees_close(p1, p2, rtol=RTOL, atol=ATOL)
        assert_trees_close(_muon_state(s1).mu["dense"][0], _muon_state(s2).mu["dense"][0])


# Complex leaves: Muon's polar factor of a complex matrix, U V^H.
def numpy_newton_schulz(x, coeffs, steps, preconditioning="frobenius", eps=1e-8):
    """The Newton-Schulz iteration in float64 / complex128, from the formulas."""
    x = np.asarray(x, np.complex128 if np.iscomplexobj(x) else np.float64)
    coeffs = np.asarray(coeffs, np.float64)
    per_step = [coeffs] * steps if coeffs.ndim == 1 else list(coeffs)
    transposed = x.shape[0] > x.shape[1]
    x = x.T if transposed else x
    if preconditioning == "frobenius":
        x = x / (np.linalg.norm(x) + eps)
    elif preconditioning == "spectral":
        x = x / (np.linalg.norm(x, 2) + eps)
    for i, (a, b, c) in enumerate(per_step):
        gram = x @ x.conj().T
        if i == 0 and preconditioning == "aol":
            s = 1 / np.sqrt(np.maximum(np.abs(gram).sum(axis=1), eps))[:, None]
            x, gram = x * s, gram * s * s.T
        elif i == 0 and preconditioning == "schatten":
            s = 1 / np.sqrt(max(np.linalg.norm(gram), eps))
            x, gram = x * s, gram * s**2
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if transposed else x


class ComplexLeaves(chex.TestCase, parameterized.TestCase):
    @chex.variants(with_jit=True)
    @parameterized.named_parameters(("frobenius", "frobenius"), ("spectral", "spectral"),
                                    ("aol", "aol"))  # fmt: skip
    def test_fifty_steps_match_optax(self, preconditioning):
        ours = muon(0.02, preconditioning=preconditioning)
        theirs = optax.contrib.muon(0.02, preconditioning=preconditioning)
        (p1, _), (p2, _) = _run_both(
            self.variant, ours, theirs, complex_params(), gradient=complex_gradient
        )
        assert p1["z"].dtype == jnp.complex64
        assert_trees_close(p1, p2, rtol=RTOL, atol=ATOL)

    @parameterized.named_parameters(*((p, p) for p in ("frobenius", "spectral", "aol", "schatten")))
    def test_polar_factor_is_numpys(self, preconditioning):
        """Every preconditioning approaches U V^H for a complex X; gradtx's 'schatten' uses
        X X^H where optax's takes X X^T (below)."""
        z = complex_params()["z"]
        ours = orthogonalize_via_newton_schulz(z, jnp.asarray((3.4445, -4.775, 2.0315)), 5,
                                               preconditioning)  # fmt: skip
        expected = numpy_newton_schulz(z, (3.4445, -4.775, 2.0315), 5, preconditioning)
        np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-5)
        u, _, vh = np.linalg.svd(np.asarray(z, np.complex128), full_matrices=False)
        # The iteration brings every singular value into about [0.7, 1.2]: near U V^H.
        assert np.linalg.norm(np.asarray(ours) - u @ vh) < 0.5

    def test_optax_schatten_is_wrong_for_complex(self):
        """optax's 'schatten' first step takes X X^T, not X X^H, for a complex X."""
        z = complex_params()["z"]
        coeffs = jnp.asarray((3.4445, -4.775, 2.0315))
        theirs = optax.contrib._muon.orthogonalize_via_newton_schulz(z, coeffs, 5, "schatten")
        assert not np.isfinite(np.asarray(theirs)).all()  # NaN: X X^T is not Hermitian


# Beyond optax: kernels of any rank, orthogonalised as fan-in x fan-out matrices.
def test_conv_kernel_update_is_numpy_newton_schulz_of_the_flattened_kernel():
    kernel_grad = np.random.default_rng(0).normal(size=(3, 3, 4, 8)).astype(np.float32)
    tx = scale_by_muon(nesterov=False)  # at the first step, the corrected momentum is g
    (update,), _ = tx.update([jnp.asarray(kernel_grad)], tx.init([jnp.zeros((3, 3, 4, 8))]))
    expected = numpy_newton_schulz(kernel_grad.reshape(36, 8), (3.4445, -4.775, 2.0315), 5)
    expected = expected.reshape(3, 3, 4, 8)
    np.testing.assert_allclose(update, expected, rtol=1e-4, atol=1e-5)
    # The learner: -lr * sqrt(max(1, 8 / 36)) = -lr times it; the bias goes to AdamW.
    opt = muon(0.1, nesterov=False)
    grads = {"kernel": jnp.asarray(kernel_grad), "bias": jnp.ones(8)}
    updates, _ = opt.update(grads, opt.init(grads))
    np.testing.assert_allclose(updates["kernel"], -0.1 * expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(updates["bias"], -0.1 * np.ones(8), rtol=1e-5)


def test_explicit_dimension_numbers_batch_axes_are_numpy_per_slice():
    """MuonDimensionNumbers(1, 2) on (heads, in, out): each head orthogonalised alone."""
    g = np.random.default_rng(1).normal(size=(2, 5, 3)).astype(np.float32)
    dims = MuonDimensionNumbers(reduction_axis=1, output_axis=2)
    ours = orthogonalize_via_newton_schulz(jnp.asarray(g), jnp.asarray((3.4445, -4.775, 2.0315)),
                                           dimension_numbers=dims)  # fmt: skip
    for head in range(2):
        expected = numpy_newton_schulz(g[head], (3.4445, -4.775, 2.0315), 5)
        np.testing.assert_allclose(ours[head], expected, rtol=1e-4, atol=1e-5)


def test_width_scaling_uses_the_kernels_fans():
    tx = scale_by_shape()
    updates, _ = tx.update({"conv": jnp.ones((3, 3, 1, 36)), "w": jnp.ones((8, 2))}, None)
    np.testing.assert_allclose(updates["conv"], 2.0)  # sqrt(36 / (3 * 3 * 1))
    np.testing.assert_allclose(updates["w"], 1.0)  # sqrt(max(1, 2 / 8))
    rms = scale_by_shape(consistent_rms=0.2)
    updates, _ = rms.update({"w": jnp.ones((8, 2))}, None)
    np.testing.assert_allclose(updates["w"], 0.2 * np.sqrt(8), rtol=1e-6)


def test_optax_rank_rule_sends_kernels_to_adamw():
    opt = muon(0.1, orthogonalize_higher_rank=False)
    state = opt.init(make_params())
    assert jax.tree.leaves(_muon_state(state).mu) == [_muon_state(state).mu["dense"][0]]
    default = _muon_state(muon(0.1).init(make_params())).mu
    assert [x.shape for x in jax.tree.leaves(default)] == [(2, 3, 3, 2), (4, 3)]


def test_optax_dimension_numbers_are_accepted():
    params = make_params()
    ours = muon(0.02, muon_weight_dimension_numbers=_explicit_dims(OMDN))
    same = muon(0.02, muon_weight_dimension_numbers=_explicit_dims(MuonDimensionNumbers))
    from conftest import run

    assert_trees_close(run(ours, params, 5), run(same, params, 5), rtol=0, atol=0)


def test_integer_leaves_pass_through():
    params = {"w": jnp.ones((3, 2)), "step": jnp.array(3)}
    opt = muon(0.1)
    updates, _ = opt.update({"w": jnp.ones((3, 2)), "step": jnp.array(7)}, opt.init(params), params)
    assert int(updates["step"]) == 7


# A small conv net on scikit-learn's digits: Muon on the kernels beats AdamW alone.
_EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@functools.cache
def _digits():
    sys.path.insert(0, str(_EXAMPLES))
    try:
        import digits_data
    finally:
        sys.path.remove(str(_EXAMPLES))
    x_train, x_test, y_train, y_test = digits_data.split()
    shape = (-1, 8, 8, 1)
    return x_train.reshape(shape), x_test.reshape(shape), y_train, y_test


def _conv_init(seed=0):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    he = lambda k, shape, fan_in: jax.random.normal(k, shape) * jnp.sqrt(2.0 / fan_in)  # noqa: E731
    return {  # flax's layouts: conv kernels (h, w, c_in, c_out), dense (in, out)
        "conv1": {"kernel": he(k1, (3, 3, 1, 16), 9), "bias": jnp.zeros(16)},
        "conv2": {"kernel": he(k2, (3, 3, 16, 32), 144), "bias": jnp.zeros(32)},
        "dense": {"kernel": he(k3, (128, 10), 128), "bias": jnp.zeros(10)},
    }


def _conv_logits(params, x):
    def conv(x, layer):
        y = jax.lax.conv_general_dilated(x, layer["kernel"], (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))  # fmt: skip
        y = jax.nn.relu(y + layer["bias"])
        return jax.lax.reduce_window(y, 0.0, jax.lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID") / 4

    x = conv(conv(x, params["conv1"]), params["conv2"])  # 8x8 -> 4x4 -> 2x2
    return x.reshape(len(x), -1) @ params["dense"]["kernel"] + params["dense"]["bias"]


def _conv_loss(params, x, y):
    logp = jax.nn.log_softmax(_conv_logits(params, x))
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))


DIGITS_STEPS, DIGITS_BATCH = 150, 64


def _train_digits(make_opt, lrs):
    """Final training loss (on the whole training set) and test accuracy for each rate."""
    x_train, x_test, y_train, y_test = map(jnp.asarray, _digits())
    idx = np.random.default_rng(0).integers(0, len(x_train), size=(DIGITS_STEPS, DIGITS_BATCH))

    def train(lr):
        opt = make_opt(lr)

        def step(carry, i):
            params, state = carry
            grads = jax.grad(_conv_loss)(params, x_train[i], y_train[i])
            updates, state = opt.update(grads, state, params)
            return (gradtx.apply_updates(params, updates), state), None

        params = _conv_init()
        (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), idx)
        accuracy = jnp.mean(jnp.argmax(_conv_logits(params, x_test), axis=1) == y_test)
        return _conv_loss(params, x_train, y_train), accuracy

    losses, accuracies = jax.jit(jax.vmap(train))(jnp.asarray(lrs, jnp.float32))
    return np.asarray(losses), np.asarray(accuracies)


@pytest.mark.slow  # about 50 s / 15 s of CPU: with GRADTX_SLOW=1
def test_muon_on_conv_kernels_trains_digits_better_than_adamw():
    """150 steps of 64 images, three learning rates each: AdamW's, then Muon's with its
    AdamW branch (the biases) at AdamW's best rate. Measured (training loss, test
    accuracy): AdamW 3e-3 / 1e-2 / 3e-2: 0.28, 0.91 / 0.097, 0.958 / 0.11, 0.949 (1e-3
    and 0.1 do worse: 0.73 and 0.29); Muon 0.01 / 0.03 / 0.1: 0.26, 0.913 / 0.019, 0.987 /
    0.041, 0.973 (0.3: 0.30)."""
    adam_lrs, muon_lrs = [3e-3, 1e-2, 3e-2], [0.01, 0.03, 0.1]
    adam_loss, adam_acc = _train_digits(lambda lr: gradtx.adamw(lr, weight_decay=0.0), adam_lrs)
    best_adam = adam_lrs[int(np.argmin(adam_loss))]
    muon_loss, muon_acc = _train_digits(lambda lr: muon(lr, adam_learning_rate=best_adam), muon_lrs)
    for name, lrs, loss, acc in (("AdamW", adam_lrs, adam_loss, adam_acc),
                                 ("Muon", muon_lrs, muon_loss, muon_acc)):  # fmt: skip
        figures = zip(lrs, loss, acc, strict=True)
        print(f"\n{name}: " + ", ".join(f"lr {r}: loss {l:.4f}, accuracy {a:.3f}"
                                        for r, l, a in figures))  # fmt: skip
    assert muon_loss.min() < 0.5 * adam_loss.min(), (muon_loss, adam_loss)
    assert muon_acc.max() >= adam_acc.max() - 0.01


# The usual promises.
def test_check_transform():
    gradtx.testing.check_transform(muon(0.02, weight_decay=0.1), make_params())
    gradtx.testing.check_transform(
        muon(0.02, preconditioning="aol", adaptive=True, ns_coeffs="dion"), make_params()
    )
    gradtx.testing.check_transform(scale_by_muon(), {"a": jnp.ones((3, 4)), "b": jnp.eye(2)})


def _vmap_params():
    params = make_params()
    return {"w": params["dense"][0], "k": params["conv"][0], "b": params["dense"][1]}


def _scan_run(opt, steps=10):
    zeros = jax.tree.map(jnp.zeros_like, _vmap_params())
    noise = jax.tree.map(lambda *n: jnp.stack(n), *(grads_at(zeros, t) for t in range(steps)))

    def step(carry, noise):
        p, state = carry
        u, state = opt.update(jax.tree.map(lambda p, n: 0.5 * p + n, p, noise), state, p)
        return (gradtx.apply_updates(p, u), state), None

    params = _vmap_params()
    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), noise)
    return params


@pytest.mark.parametrize("preconditioning", ["frobenius", "aol"])
def test_vmap_over_learning_rate(preconditioning):
    lrs = np.geomspace(1e-3, 1e-1, 3).astype(np.float32)
    make = lambda lr: muon(lr, weight_decay=0.1, preconditioning=preconditioning)  # noqa: E731
    assert_vmap_equals_loop(lambda lr: _scan_run(make(lr)), lrs, rtol=1e-5, atol=1e-6)


def test_vmap_over_beta():
    values = np.asarray([0.5, 0.9, 0.95], np.float32)
    assert_vmap_equals_loop(lambda b: _scan_run(muon(0.02, beta=b)), values, rtol=1e-5, atol=1e-6)


def test_signatures_are_optax_then_keyword_only_options():
    for ours, theirs, extra in [
        (muon, optax.contrib.muon, ["orthogonalize_higher_rank", "param_specs"]),
        (scale_by_muon, optax.contrib.scale_by_muon, ["param_specs"]),
    ]:
        mine = list(inspect.signature(ours).parameters.values())
        their = list(inspect.signature(theirs).parameters.values())
        assert [(p.name, p.kind, p.default) for p in mine[: len(their)]] == [
            (p.name, p.kind, p.default) for p in their
        ]
        assert [p.name for p in mine[len(their) :]] == extra
        assert all(p.kind is p.KEYWORD_ONLY for p in mine[len(their) :])


def test_state_and_dimension_numbers_are_optaxs():
    assert MuonState._fields == optax.contrib.MuonState._fields
    assert MuonDimensionNumbers._fields == OMDN._fields
    assert MuonDimensionNumbers() == tuple(OMDN())


BAD = [
    (lambda: muon(-0.1), "muon: learning_rate must be in [0, inf), got -0.1"),
    (lambda: muon(0.1, beta=1.0), "muon: beta must be in [0, 1), got 1"),
    (lambda: muon(0.1, eps=-1.0), "muon: eps must be in [0, inf), got -1"),
    (lambda: muon(0.1, ns_steps=-1), "muon: ns_steps must be an integer >= 0, got -1"),
    (lambda: muon(0.1, ns_steps=2.5), "muon: ns_steps must be an integer >= 0, got 2.5"),
    (lambda: muon(0.1, ns_coeffs=(1.0, 2.0)), "muon: ns_coeffs must have shape (3,) or (n, 3)"),
    (lambda: muon(0.1, ns_coeffs="muon"), "muon: ns_coeffs must be a triple, a sequence of"),
    (lambda: muon(0.1, ns_coeffs="dion", ns_steps=3),
     "muon: ns_coeffs has 5 triples, more than ns_steps=3"),
    (lambda: muon(0.1, preconditioning="newton"), "muon: preconditioning must be one of"),
    (lambda: muon(0.1, weight_decay=-1.0), "muon: weight_decay must be in [0, inf)"),
    (lambda: muon(0.1, mu_dtype=jnp.int32), "muon: mu_dtype must be a floating or complex"),
    (lambda: muon(0.1, consistent_rms=-0.2), "muon: consistent_rms must be in [0, inf)"),
    (lambda: muon(0.1, adam_b1=1.5), "muon: adam_b1 must be in [0, 1), got 1.5"),
    (lambda: muon(0.1, adam_b2=-0.1), "muon: adam_b2 must be in [0, 1), got -0.1"),
    (lambda: muon(0.1, adam_eps_root=-1.0), "muon: adam_eps_root must be in [0, inf)"),
    (lambda: muon(0.1, adam_weight_decay=-1.0), "muon: adam_weight_decay must be in [0, inf)"),
    (lambda: muon(0.1, adam_learning_rate=-1.0), "muon: adam_learning_rate must be in [0, inf)"),
    (lambda: scale_by_muon(beta=-0.5), "scale_by_muon: beta must be in [0, 1), got -0.5"),
]  # fmt: skip


@pytest.mark.parametrize("build,message", BAD, ids=[m.split(" must")[0] for _, m in BAD])
def test_bad_hyperparameters_name_the_argument(build, message):
    with pytest.raises(ValueError) as error:
        build()
    assert message in str(error.value)


@pytest.mark.parametrize(
    "dims,params,match",
    [
        (None, {"v": jnp.ones(3)}, r"leaf at \['v'\] has shape \(3,\).*rank >= 2"),
        (MuonDimensionNumbers(0, 0), {"w": jnp.ones((2, 3))}, r"overlap.*\['w'\]"),
        (MuonDimensionNumbers(0, 5), {"w": jnp.ones((2, 3))}, r"output_axis \(5,\).*\['w'\]"),
        (MuonDimensionNumbers((0, 0), 1), {"w": jnp.ones((2, 3))}, r"repeats an axis"),
        ({"w": MuonDimensionNumbers(), "x": None}, {"w": jnp.ones((2, 3))},
         r"weight_dimension_numbers .* label at \['x'\]"),
    ],
)  # fmt: skip
def test_bad_leaves_and_dimension_numbers_name_the_leaf(dims, params, match):
    tx = scale_by_muon(weight_dimension_numbers=dims)
    with pytest.raises(ValueError, match=match):
        tx.init(params)


def test_a_tree_mismatch_names_the_path():
    params = {"w": jnp.ones((2, 3)), "v": jnp.ones((3, 3))}
    tx = scale_by_muon()
    with pytest.raises(ValueError, match=r"\['v'\]"):
        tx.update({"w": jnp.ones((2, 3)), "v": jnp.ones((3, 4))}, tx.init(params))
