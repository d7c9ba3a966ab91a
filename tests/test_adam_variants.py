"""optax.contrib's ADOPT, AdEMAMix, simplified AdEMAMix, MADGRAD, ACProp and MoMo, against optax.

optax 0.2.8 is the oracle: 50 steps on conftest's nested tree, with and without jit,
at the defaults (with a learning-rate schedule) and with every argument moved off its
default. MoMo's loss reaches it as the ``value`` extra, also through ``gradtx.chain``.
Where optax has no complex rule (ADOPT's clip, MADGRAD's cube root raise) or a wrong
one (the simplified AdEMAMix and MoMo-Adam square a complex g; MoMo's inner products
are complex), the oracle for the complex tree is a NumPy loop in complex128 written
here, or optax on the tree's real view (MoMo, which treats a complex entry as two real
coordinates).
"""

from __future__ import annotations

import functools
import inspect

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
from gradtx.learners.adam_variants import (
    acprop,
    ademamix,
    adopt,
    madgrad,
    momo,
    momo_adam,
    simplified_ademamix,
)
from gradtx.testing import check_transform
from gradtx.transforms.acprop import scale_by_acprop
from gradtx.transforms.ademamix import (
    ScaleByAdemamixState,
    ScaleBySimplifiedAdEMAMixState,
    scale_by_ademamix,
    scale_by_simplified_ademamix,
)
from gradtx.transforms.adopt import scale_by_adopt
from gradtx.transforms.madgrad import MadgradState, scale_by_madgrad
from gradtx.transforms.momo import MomoAdamState, MomoState, scale_by_momo, scale_by_momo_adam

C = optax.contrib
STEPS = 50
BF16 = jnp.bfloat16
MASK = {"dense": [True, False], "conv": True, "head": [False, True]}  # a prefix of the tree
RTOL, ATOL = 1e-5, 1e-6


def _decay_matrices(params):
    return jax.tree.map(lambda p: p.ndim > 1, params)


def _lr_schedule(count):
    return 0.02 * 0.95 ** count.astype(jnp.float32)


def _momo_lr_schedule(count):
    return 0.8 * 0.97 ** count.astype(jnp.float32)


def _wd_schedule(count):
    return 0.1 * jnp.minimum(1.0, (count + 1) / 10)


def _b3_schedule(count):  # the paper's warm-up of the slow decay, shortened
    return jnp.minimum(0.999, 0.9 + 0.01 * count)


def _alpha_schedule(count):  # the paper's linear warm-up of alpha
    return 3.0 * jnp.minimum(1.0, count / 20)


def _clip_value(count):
    return 0.5 * (count + 1.0) ** 0.5


def loss(params):
    """The quadratic whose gradient is grads_at's pull, 0.5 p (the noise aside)."""
    return 0.25 * sum(jnp.sum(jnp.real(x * jnp.conj(x))) for x in jax.tree.leaves(params))


# name -> (gradtx learner, optax learner, arguments for both, index of the learner's main
# block in its chain state, or None where the state is the block's own). Positional
# where optax's are.
LEARNERS = {
    "adopt": (adopt, C.adopt, (_lr_schedule,), {}, 0),
    "adopt arguments": (adopt, C.adopt, (1e-2, 0.8, 0.99, 1e-4),
                        dict(nesterov=True, clip_value_fn=_clip_value), 0),
    "adopt no clipping": (adopt, C.adopt, (1e-2, 0.85, 0.995, 1e-3),
                          dict(use_clipping=False), 0),
    "ademamix": (ademamix, C.ademamix, (_lr_schedule,), {}, 0),
    "ademamix arguments": (ademamix, C.ademamix, (1e-2, 0.8, 0.99, _b3_schedule,
                                                  _alpha_schedule, 1e-6, 1e-9, None,
                                                  _wd_schedule, MASK), {}, 0),
    "simplified_ademamix": (simplified_ademamix, C.simplified_ademamix, (_lr_schedule,), {}, 0),
    "simplified_ademamix arguments": (simplified_ademamix, C.simplified_ademamix,
                                      (1e-2, 0.9, 0.9, _alpha_schedule, 1e-6, 1e-9,
                                       _wd_schedule, _decay_matrices), {}, 0),
    "madgrad": (madgrad, C.madgrad, (_lr_schedule,), {}, 1),
    "madgrad arguments": (madgrad, C.madgrad, (1e-2, 0.8, _wd_schedule, 1e-5), {}, 1),
    "acprop": (acprop, C.acprop, (_lr_schedule,), {}, 0),
    "acprop arguments": (acprop, C.acprop, (1e-2, 0.8, 0.99, 1e-10, 1e-12, _wd_schedule, MASK),
                         {}, 0),
    "momo": (momo, C.momo, (), {}, None),
    "momo arguments": (momo, C.momo, (_momo_lr_schedule, 0.8, 0.1, 0.05, True), {}, None),
    "momo fixed bound": (momo, C.momo, (0.5, 0.7, 0.2, 0.1, False), {}, None),
    "momo_adam": (momo_adam, C.momo_adam, (), {}, None),
    "momo_adam arguments": (momo_adam, C.momo_adam,
                            (_momo_lr_schedule, 0.8, 0.99, 1e-6, 0.1, 0.05, True), {}, None),
    "momo_adam fixed bound": (momo_adam, C.momo_adam, (0.3, 0.85, 0.9, 1e-5, 0.2, 0.1, False),
                              {}, None),
}  # fmt: skip

# The blocks at their own defaults (scale_by_ademamix's alpha is 6, its learner's 5), then
# a -0.01 scale.
BLOCKS = {
    "scale_by_adopt": (scale_by_adopt, C.scale_by_adopt, (), {}),
    "scale_by_ademamix": (scale_by_ademamix, C.scale_by_ademamix, (), {}),
    "scale_by_simplified_ademamix": (scale_by_simplified_ademamix,
                                     C.scale_by_simplified_ademamix, (), {}),
    "scale_by_acprop": (scale_by_acprop, C.scale_by_acprop, (), {}),
    "scale_by_madgrad": (scale_by_madgrad, C.scale_by_madgrad, (0.5,), {}),
}  # fmt: skip


def _takes_value(name):
    return name.startswith("momo")


@functools.cache
def _learner_pair(name):
    ours, theirs, args, kwargs, _ = LEARNERS[name]
    return ours(*args, **kwargs), theirs(*args, **kwargs)


@functools.cache
def _block_pair(name):
    ours, theirs, args, kwargs = BLOCKS[name]
    return (
        gradtx.chain(ours(*args, **kwargs), gradtx.scale(-0.01)),
        optax.chain(theirs(*args, **kwargs), optax.scale(-0.01)),
    )


def _run_both(variant, ours, theirs, params, *, value=False, steps=STEPS, gradient=grads_at):
    """Both transforms on the same gradient (and loss) stream; the final params and states."""
    results = []
    for tx, apply in ((ours, gradtx.apply_updates), (theirs, optax.apply_updates)):
        update, p = variant(tx.update), params
        state = tx.init(p)
        for t in range(steps):
            extra = {"value": loss(p)} if value else {}
            u, state = update(gradient(p, t), state, p, **extra)
            p = apply(p, u)
        results.append((p, state))
    return results


def _main_state(state, index):
    return state if index is None else state[index]


def _moved(params, start):
    return max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(start), strict=True)
    )


class MatchesOptax(chex.TestCase, parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*((n, n) for n in LEARNERS))
    def test_learner_fifty_steps(self, name):
        ours, theirs = _learner_pair(name)
        start = make_params()
        (p1, s1), (p2, s2) = _run_both(self.variant, ours, theirs, start, value=_takes_value(name))
        assert _moved(p2, start) > 0.05, "the run must move the params to compare anything"
        assert_trees_close(p1, p2, rtol=RTOL, atol=ATOL)
        # The block's state is optax's, field for field: state[0].mu ports.
        index = LEARNERS[name][4]
        ours_state, their_state = _main_state(s1, index), _main_state(s2, index)
        assert type(ours_state).__name__ == type(their_state).__name__
        assert ours_state._fields == their_state._fields
        assert_trees_close(tuple(ours_state), tuple(their_state), rtol=RTOL, atol=ATOL)

    @chex.variants(with_jit=True)
    @parameterized.named_parameters(*((n, n) for n in BLOCKS))
    def test_block_fifty_steps(self, name):
        ours, theirs = _block_pair(name)
        (p1, s1), (p2, s2) = _run_both(self.variant, ours, theirs, make_params())
        assert_trees_close(p1, p2, rtol=RTOL, atol=ATOL)
        assert s1[0]._fields == s2[0]._fields
        assert_trees_close(tuple(s1[0]), tuple(s2[0]), rtol=RTOL, atol=ATOL)

    # Jit only: the extras are routed in Python, the same under both (the learners' no-jit
    # runs are above), and an eager clip_by_global_norm costs 12 s here.
    @chex.variants(with_jit=True)
    @parameterized.named_parameters(
        ("momo", lambda m: m(0.5, 0.8, weight_decay=0.05), momo, C.momo),
        ("momo_adam", lambda m: m(0.3, weight_decay=0.05, adapt_lower_bound=True), momo_adam,
         C.momo_adam),
    )  # fmt: skip
    def test_loss_flows_through_chain(self, build, ours, theirs):
        """value reaches MoMo past a block that takes no extras, as in optax's chain."""
        mine = gradtx.chain(gradtx.clip_by_global_norm(1.0), build(ours))
        expected = optax.chain(optax.clip_by_global_norm(1.0), build(theirs))
        start = make_params()
        (p1, _), (p2, _) = _run_both(self.variant, mine, expected, start, value=True)
        assert _moved(p2, start) > 0.05
        assert_trees_close(p1, p2, rtol=RTOL, atol=ATOL)

    @chex.variants(with_jit=True)
    def test_momo_weight_decay_schedule_as_optax_injects_it(self):
        """optax's momo takes a number for weight_decay; gradtx also a schedule, evaluated
        at the updates already applied, as optax.inject_hyperparams hands it to optax."""
        ours = momo(0.5, weight_decay=_wd_schedule)
        theirs = optax.inject_hyperparams(C.momo)(0.5, weight_decay=_wd_schedule)
        (p1, _), (p2, _) = _run_both(self.variant, ours, theirs, make_params(3), value=True)
        assert_trees_close(p1, p2, rtol=RTOL, atol=ATOL)


def test_chain_without_the_loss_names_momo():
    params = make_params()
    tx = gradtx.chain(gradtx.clip_by_global_norm(1.0), momo())
    with pytest.raises(ValueError, match="^momo: update needs this step's loss"):
        tx.update(params, tx.init(params), params)
    with pytest.raises(ValueError, match="^momo_adam: update needs the params"):
        momo_adam().update(params, momo_adam().init(params), value=1.0)
    with pytest.raises(ValueError, match="^madgrad: update needs the params"):
        madgrad(0.1).update(params, madgrad(0.1).init(params))
    block = scale_by_momo()
    with pytest.raises(ValueError, match="^scale_by_momo: update needs this step's loss"):
        block.update(params, block.init(params), params)


def test_momo_learners_take_extras_as_optax_says():
    assert isinstance(momo(), gradtx.GradientTransformationExtraArgs)
    assert isinstance(momo_adam(), gradtx.GradientTransformationExtraArgs)


# Complex leaves. Where optax's complex rule is right: optax on the complex tree.
COMPLEX_AS_OPTAX = ["ademamix", "acprop", "adopt no clipping"]


SECOND_MOMENTS = ("nu", "n", "grad_sum_sq", "exp_avg_sq")


def _real_second_moments(state):
    """The second moments of the complex leaf "z", with their dtypes."""
    found = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        name = jax.tree_util.keystr(path)
        if "'z'" in name and any(f".{f}[" in name for f in SECOND_MOMENTS):
            found.append((name, leaf.dtype))
    return found


class ComplexMatchesOptax(chex.TestCase, parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*((n, n) for n in COMPLEX_AS_OPTAX))
    def test_fifty_steps(self, name):
        ours, theirs = _learner_pair(name)
        (p1, s1), (p2, _) = _run_both(
            self.variant, ours, theirs, complex_params(), gradient=complex_gradient
        )
        assert p1["z"].dtype == jnp.complex64 and p1["w"].dtype == jnp.float32
        assert_trees_close(p1, p2, rtol=RTOL, atol=ATOL)
        moments = _real_second_moments(s1)
        assert moments and all(dtype == jnp.float32 for _, dtype in moments), moments


# Where optax raises or is wrong: NumPy loops in complex128, one step each, on lists of
# leaves. Each takes (state, g, x, t, loss) and returns (update, state).
def _np_adopt(lr, b1=0.9, b2=0.9999, eps=1e-6):
    def step(state, g, x, t, f):
        m, v = state or ([0 * gi for gi in g], [np.abs(gi) ** 2 for gi in g])
        if not state:  # the first step measures v_0 = |g_0|^2
            return [0 * gi for gi in g], (m, v)
        c = t**0.25
        n = [gi / np.maximum(np.sqrt(vi), eps) for gi, vi in zip(g, v, strict=True)]
        n = [np.clip(ni.real, -c, c) + 1j * np.clip(ni.imag, -c, c) if np.iscomplexobj(ni)
             else np.clip(ni, -c, c) for ni in n]  # fmt: skip
        m = [b1 * mi + (1 - b1) * ni for mi, ni in zip(m, n, strict=True)]
        v = [b2 * vi + (1 - b2) * np.abs(gi) ** 2 for vi, gi in zip(v, g, strict=True)]
        return [-lr * mi for mi in m], (m, v)

    return step


def _np_simplified_ademamix(lr, b1=0.99, b2=0.95, alpha=0.0, eps=1e-8):
    def step(state, g, x, t, f):
        m, n = state or ([0 * gi for gi in g], [0 * np.abs(gi) for gi in g])
        m = [b1 * mi + gi for mi, gi in zip(m, g, strict=True)]
        n = [b2 * ni + (1 - b2) * np.abs(gi) ** 2 for ni, gi in zip(n, g, strict=True)]
        u = [-lr * (mi + alpha * gi) / (np.sqrt(ni / (1 - b2 ** (t + 1))) + eps)
             for mi, gi, ni in zip(m, g, n, strict=True)]  # fmt: skip
        return u, (m, n)

    return step


def _np_madgrad(lr, momentum=0.9, eps=1e-6):
    def step(state, g, x, t, f):
        total, s, x0 = state or ([0 * np.abs(gi) for gi in g], [0 * gi for gi in g], x)
        weight = (lr + eps) * np.sqrt(t + 1)
        total = [ti + weight * np.abs(gi) ** 2 for ti, gi in zip(total, g, strict=True)]
        s = [si + weight * gi for si, gi in zip(s, g, strict=True)]
        z = [x0i - si / (np.cbrt(ti) + eps) for x0i, si, ti in zip(x0, s, total, strict=True)]
        u = [(1 - momentum) * zi + momentum * xi - xi for zi, xi in zip(z, x, strict=True)]
        return u, (total, s, x0)

    return step


def _np_momo_adam(lr=1e-2, b1=0.9, b2=0.999, eps=1e-8, lower_bound=0.0, wd=0.05):
    def inner(a, b):
        return sum(np.real(np.vdot(ai, bi)) for ai, bi in zip(a, b, strict=True))

    def step(state, g, x, t, f):
        d, v, barf, gamma = state or ([0 * gi for gi in g], [0 * np.abs(gi) for gi in g], 0, 0)
        barf = b1 * barf + (1 - b1) * f
        d = [b1 * di + (1 - b1) * gi for di, gi in zip(d, g, strict=True)]
        v = [b2 * vi + (1 - b2) * np.abs(gi) ** 2 for vi, gi in zip(v, g, strict=True)]
        c1, c2 = 1 - b1 ** (t + 1), 1 - b2 ** (t + 1)
        denom = [eps + np.sqrt(vi / c2) for vi in v]
        norm = inner(d, [di / Di for di, Di in zip(d, denom, strict=True)])
        gamma = b1 * gamma + (1 - b1) * inner(g, x)
        shrink = 1 + lr * wd
        polyak = max(shrink * (barf - c1 * lower_bound - gamma) + inner(d, x), 0) / norm
        tau = min(lr / c1, polyak)
        u = [
            -(lr * wd) / shrink * xi - tau * di / Di for xi, di, Di in zip(x, d, denom, strict=True)
        ]
        return u, (d, v, barf, gamma)

    return step


COMPLEX_ORACLES = {
    "adopt": (lambda: adopt(0.05), _np_adopt(0.05)),
    "simplified_ademamix": (lambda: simplified_ademamix(0.01, alpha=2.0),
                            _np_simplified_ademamix(0.01, alpha=2.0)),
    "madgrad": (lambda: madgrad(0.05), _np_madgrad(0.05)),
    "momo_adam": (lambda: momo_adam(weight_decay=0.05), _np_momo_adam(wd=0.05)),
}  # fmt: skip


TARGET = {"z": 1 + 1j, "w": 1.0}  # where complex_gradient pulls


def _complex_loss(p):
    """The objective complex_gradient descends (its noise aside)."""
    return 0.5 * sum(jnp.sum(jnp.abs(x - TARGET[k]) ** 2) for k, x in p.items())


def _run_against_numpy(name, update, dtype=np.complex64):
    """gradtx's learner and its NumPy oracle (complex128) on their own trajectories."""
    build, oracle = COMPLEX_ORACLES[name]
    opt = build()
    real = np.float64 if dtype == np.complex128 else np.float32
    p = {k: v.astype(dtype if k == "z" else real) for k, v in complex_params().items()}
    state = opt.init(p)
    update = update(opt.update)
    keys = sorted(p)
    x = [np.asarray(p[k], np.complex128 if k == "z" else np.float64) for k in keys]
    oracle_state = None
    zeros = jax.tree.map(jnp.zeros_like, complex_params())
    for t in range(STEPS):
        noise = complex_gradient(zeros, t)  # the noise: the gradient at 0, plus the target
        g = {k: p[k] - TARGET[k] + (noise[k] + TARGET[k]).astype(p[k].dtype) for k in keys}
        u, state = update(g, state, p, value=_complex_loss(p))
        p = gradtx.apply_updates(p, u)
        g_np = [
            xi - TARGET[k] + (np.asarray(noise[k]) + TARGET[k])
            for xi, k in zip(x, keys, strict=True)
        ]
        f = 0.5 * sum(np.sum(np.abs(xi - TARGET[k]) ** 2) for xi, k in zip(x, keys, strict=True))
        u_np, oracle_state = oracle(oracle_state, g_np, x, t, f)
        x = [xi + ui for xi, ui in zip(x, u_np, strict=True)]
    assert p["z"].dtype == dtype
    assert _moved(p, complex_params()) > 0.05
    moments = _real_second_moments(state)
    assert moments and all(d == real for _, d in moments), moments
    return p, dict(zip(keys, x, strict=True))


# MoMo-Adam's step divides a difference of O(1) averages (f - gamma + <d, x>) by a small
# norm: float32 rounding reaches 4e-5 of the params after 50 steps (in float64, below).
FLOAT32_TOLERANCE = {"momo_adam": (1e-4, 1e-5)}


class ComplexMatchesNumPy(chex.TestCase, parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*((n, n) for n in COMPLEX_ORACLES))
    def test_fifty_steps(self, name):
        p, expected = _run_against_numpy(name, self.variant)
        rtol, atol = FLOAT32_TOLERANCE.get(name, (RTOL, ATOL))
        assert_trees_close(p, expected, rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", sorted(COMPLEX_ORACLES))
def test_complex128_fifty_steps_match_numpy(name):
    """The same in float64, where rounding no longer hides a wrong rule. (MADGRAD's
    sqrt(k + 1) is float32 of the int32 count, as in optax: 1e-8 of the params.)"""
    with jax.enable_x64(True):
        p, expected = _run_against_numpy(name, jax.jit, np.complex128)
    assert_trees_close(p, expected, rtol=1e-7, atol=1e-8)


def _real_view(tree):
    return {"z_re": tree["z"].real, "z_im": tree["z"].imag, "w": tree["w"]}


class ComplexMomoIsRealMomo(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_fifty_steps_against_optax_on_the_real_view(self):
        """MoMo's rule (linear averages, one global inner product) treats a complex entry
        as two real coordinates: optax's momo on the real and imaginary parts as leaves
        is the oracle (optax's own complex run adds complex inner products to its state)."""
        ours, theirs = momo(0.5, weight_decay=0.05), C.momo(0.5, weight_decay=0.05)
        update, p = self.variant(ours.update), complex_params()
        state = ours.init(p)
        q = _real_view(p)
        their_state = theirs.init(q)
        their_update = self.variant(theirs.update)
        for t in range(STEPS):
            g = complex_gradient(p, t)
            u, state = update(g, state, p, value=_complex_loss(p))
            v, their_state = their_update(_real_view(g), their_state, q, value=_complex_loss(p))
            p, q = gradtx.apply_updates(p, u), optax.apply_updates(q, v)
        assert state.gamma.dtype == jnp.float32, "the scalar state stays real"
        assert_trees_close(_real_view(p), q, rtol=RTOL, atol=ATOL)


# gradtx.testing's property checks, on the nested tree and on the complex one.
CHECKED = {
    "adopt": lambda: adopt(1e-2, nesterov=True),
    "ademamix": lambda: ademamix(1e-2, b3=_b3_schedule, alpha=_alpha_schedule, weight_decay=0.1),
    "simplified_ademamix": lambda: simplified_ademamix(1e-2, alpha=1.0, mask=MASK),
    "madgrad": lambda: madgrad(1e-2, weight_decay=0.1),
    "acprop": lambda: acprop(1e-2, weight_decay=0.1),
    "momo": lambda: momo(0.5, adapt_lower_bound=True, weight_decay=0.1),
    "momo_adam": lambda: momo_adam(adapt_lower_bound=True, weight_decay=0.1),
}


@pytest.mark.parametrize("name", sorted(CHECKED))
def test_check_transform(name):
    check_transform(CHECKED[name](), make_params(), extra={"value": 1.0}, name=name)


@pytest.mark.parametrize("name", ["adopt", "madgrad", "momo", "momo_adam"])
def test_check_transform_on_complex_params(name):
    check_transform(CHECKED[name](), complex_params(), extra={"value": 1.0}, name=name)


# vmap over the learning rate, against a Python loop of jitted runs.
VMAP_STEPS = 10


def _vmap_params():
    params = make_params()
    return {"w": params["dense"][0], "b": params["head"][0]}


def _scan_run(opt, steps=VMAP_STEPS):
    """conftest.run as one lax.scan: gradients 0.5 p + noise, the loss of p as value."""
    zeros = jax.tree.map(jnp.zeros_like, _vmap_params())
    noise = jax.tree.map(lambda *n: jnp.stack(n), *(grads_at(zeros, t) for t in range(steps)))

    def step(carry, noise):
        p, state = carry
        grads = jax.tree.map(lambda p, n: 0.5 * p + n, p, noise)
        u, state = opt.update(grads, state, p, value=loss(p))
        return (gradtx.apply_updates(p, u), state), None

    params = _vmap_params()
    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), noise)
    return params


@pytest.mark.parametrize(
    "make",
    [
        lambda lr: adopt(lr),
        lambda lr: ademamix(lr, alpha=_alpha_schedule),
        lambda lr: simplified_ademamix(lr, alpha=1.0),
        lambda lr: madgrad(lr, weight_decay=0.1),
        lambda lr: acprop(lr, mask={"w": True, "b": False}, weight_decay=0.1),
        lambda lr: momo(10 * lr, adapt_lower_bound=True),
        lambda lr: momo_adam(lr, weight_decay=0.1),
    ],
    ids=["adopt", "ademamix", "simplified_ademamix", "madgrad", "acprop", "momo", "momo_adam"],
)
def test_vmap_over_learning_rate(make):
    lrs = np.geomspace(1e-3, 1e-1, 4).astype(np.float32)
    assert_vmap_equals_loop(lambda lr: _scan_run(make(lr)), lrs, rtol=1e-5, atol=1e-6)


# State dtypes.
def _moments(name, state):
    """The stored moments that state_dtype sets (not MADGRAD's x0, nor MoMo's scalars)."""
    main = _main_state(state, LEARNERS[name][4])
    fields = {"madgrad": ("grad_sum_sq", "s"), "momo": ("exp_avg",),
              "momo_adam": ("exp_avg", "exp_avg_sq")}.get(name.split()[0])  # fmt: skip
    picked = (
        [getattr(main, f) for f in fields]
        if fields
        else [v for f, v in zip(main._fields, main, strict=True) if "count" not in f and f != "t"]
    )
    return jax.tree.leaves(picked)


BF16_CASES = ["adopt arguments", "ademamix arguments", "simplified_ademamix arguments",
              "madgrad arguments", "acprop arguments", "momo fixed bound",
              "momo_adam fixed bound"]  # fmt: skip


@pytest.mark.parametrize("name", BF16_CASES)
def test_bfloat16_state_runs_close_to_float32(name):
    ours, _, args, kwargs, _ = LEARNERS[name]
    opt16, (opt32, _) = ours(*args, **kwargs, state_dtype=BF16), _learner_pair(name)
    params = make_params()
    value = _takes_value(name)
    p16, s16 = params, opt16.init(params)
    assert _moments(name, s16) and all(x.dtype == BF16 for x in _moments(name, s16))
    update16 = jax.jit(opt16.update)
    for t in range(STEPS):
        extra = {"value": loss(p16)} if value else {}
        u, s16 = update16(grads_at(p16, t), s16, p16, **extra)
        p16 = gradtx.apply_updates(p16, u)
    assert all(x.dtype == BF16 for x in _moments(name, s16)), "the moments stay bfloat16"
    assert jax.tree.structure(s16) == jax.tree.structure(opt16.init(params))
    p32 = params
    state32, update32 = opt32.init(params), jax.jit(opt32.update)
    for t in range(STEPS):
        extra = {"value": loss(p32)} if value else {}
        u, state32 = update32(grads_at(p32, t), state32, p32, **extra)
        p32 = gradtx.apply_updates(p32, u)
    moved, gap = _moved(p32, params), _moved(p16, p32)
    assert moved > 0.1 and gap < 0.03 * moved, (gap, moved)


class MuDtypeMatchesOptax(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_adopt_fifty_steps(self):
        build = lambda m: m(1e-2, 0.9, 0.99, 1e-6, BF16, nesterov=True)  # noqa: E731
        (p1, s1), (p2, s2) = _run_both(self.variant, build(adopt), build(C.adopt), make_params())
        assert_trees_close(p1, p2, rtol=RTOL, atol=ATOL)
        assert s1[0].mu["dense"][0].dtype == s2[0].mu["dense"][0].dtype == BF16
        assert s1[0].nu["dense"][0].dtype == jnp.float32
        assert_trees_close(s1[0].mu, s2[0].mu)

    @chex.variants(with_jit=True, without_jit=True)
    def test_ademamix_keeps_its_averages_in_mu_dtype(self):
        """optax's state leaves mu_dtype after one step (the moments come back in float32,
        so a lax.scan over its update fails); gradtx stores m1 and m2 in it every step. The
        oracle is optax with its averages cast to bfloat16 between steps: optax's arithmetic
        on bfloat16 averages."""
        ours = ademamix(1e-2, mu_dtype=BF16, weight_decay=0.1)
        theirs = C.ademamix(1e-2, mu_dtype=BF16, weight_decay=0.1)
        update, their_update = self.variant(ours.update), self.variant(theirs.update)
        p = q = make_params()
        state, their_state = ours.init(p), theirs.init(q)
        for t in range(STEPS):
            u, state = update(grads_at(p, t), state, p)
            v, their_state = their_update(grads_at(q, t), their_state, q)
            first = their_state[0]
            their_state = (first._replace(m1=optax.tree.cast(first.m1, BF16),
                                          m2=optax.tree.cast(first.m2, BF16)),
                           *their_state[1:])  # fmt: skip
            p, q = gradtx.apply_updates(p, u), optax.apply_updates(q, v)
        assert_trees_close(p, q, rtol=RTOL, atol=ATOL)
        assert all(x.dtype == BF16 for x in jax.tree.leaves((state[0].m1, state[0].m2)))
        assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state[0].nu))
        assert_trees_close(state[0].m1, their_state[0].m1)


# Arguments: optax's positions, names and defaults; state field names; errors.
PAIRS = [
    (adopt, C.adopt), (ademamix, C.ademamix), (simplified_ademamix, C.simplified_ademamix),
    (madgrad, C.madgrad), (acprop, C.acprop), (momo, C.momo), (momo_adam, C.momo_adam),
    (scale_by_adopt, C.scale_by_adopt), (scale_by_ademamix, C.scale_by_ademamix),
    (scale_by_simplified_ademamix, C.scale_by_simplified_ademamix),
    (scale_by_madgrad, C.scale_by_madgrad), (scale_by_acprop, C.scale_by_acprop),
]  # fmt: skip


def _described(parameter):
    default = parameter.default
    if default is not parameter.empty and callable(default):  # clip_value_fn's: by its values
        counts = jnp.arange(5)
        default = ("function", tuple(np.asarray(default(counts)).tolist()))
    return parameter.name, parameter.kind, default


@pytest.mark.parametrize("ours,theirs", PAIRS, ids=[o.__name__ for o, _ in PAIRS])
def test_signature_is_optax_then_keyword_only_options(ours, theirs):
    mine = list(inspect.signature(ours).parameters.values())
    their = list(inspect.signature(theirs).parameters.values())
    assert [_described(p) for p in mine[: len(their)]] == [_described(p) for p in their]
    assert [p.name for p in mine[len(their) :]] == ["state_dtype"]
    assert all(p.kind is p.KEYWORD_ONLY for p in mine[len(their) :])


def test_momo_blocks_are_the_learners_arguments():
    """scale_by_momo(_adam) is the whole of momo(_adam): the same arguments, in order."""
    for block, learner in [(scale_by_momo, momo), (scale_by_momo_adam, momo_adam)]:
        assert (
            inspect.signature(block).parameters.keys()
            == inspect.signature(learner).parameters.keys()
        )


def test_state_fields_are_optax():
    assert ScaleByAdemamixState._fields == C.ScaleByAdemamixState._fields
    assert ScaleBySimplifiedAdEMAMixState._fields == C.ScaleBySimplifiedAdEMAMixState._fields
    assert MadgradState._fields == C.MadgradState._fields
    assert MomoState._fields == C.MomoState._fields
    assert MomoAdamState._fields == C.MomoAdamState._fields
    params = make_params()
    for ours, theirs in [(scale_by_adopt, C.scale_by_adopt), (scale_by_acprop, C.scale_by_acprop)]:
        mine, their = ours().init(params), theirs().init(params)
        assert type(mine).__name__ == type(their).__name__ and mine._fields == their._fields


BAD = [
    (lambda: adopt(-0.1), "adopt: learning_rate must be in [0, inf), got -0.1"),
    (lambda: adopt(0.1, b1=1.0), "adopt: b1 must be in [0, 1), got 1"),
    (lambda: adopt(0.1, b2=-0.5), "adopt: b2 must be in [0, 1), got -0.5"),
    (lambda: adopt(0.1, eps=-1.0), "adopt: eps must be in [0, inf), got -1"),
    (lambda: adopt(0.1, clip_value_fn=1.0), "adopt: clip_value_fn must be a function"),
    (lambda: adopt(0.1, mu_dtype=jnp.int32), "adopt: mu_dtype must be a floating or complex"),
    (lambda: adopt(0.1, mu_dtype=BF16, state_dtype=BF16),
     "adopt: give mu_dtype or state_dtype, not both"),
    (lambda: ademamix(0.1, b3=1.5), "ademamix: b3 must be in [0, 1), got 1.5"),
    (lambda: ademamix(0.1, alpha=-1.0), "ademamix: alpha must be in [0, inf), got -1"),
    (lambda: ademamix(0.1, eps_root=-1.0), "ademamix: eps_root must be in [0, inf), got -1"),
    (lambda: ademamix(0.1, weight_decay=-0.1),
     "ademamix: weight_decay must be in [0, inf), got -0.1"),
    (lambda: ademamix(0.1, state_dtype=jnp.int8), "ademamix: state_dtype must be a floating"),
    (lambda: simplified_ademamix(0.1, b1=1.0), "simplified_ademamix: b1 must be in [0, 1)"),
    (lambda: simplified_ademamix(0.1, alpha=-2.0),
     "simplified_ademamix: alpha must be in [0, inf), got -2"),
    (lambda: madgrad(-1.0), "madgrad: learning_rate must be in [0, inf), got -1"),
    (lambda: madgrad(0.1, momentum=1.0), "madgrad: momentum must be in [0, 1), got 1"),
    (lambda: madgrad(0.1, weight_decay=-1.0), "madgrad: weight_decay must be in [0, inf)"),
    (lambda: madgrad(0.1, eps=-1e-6), "madgrad: eps must be in [0, inf)"),
    (lambda: acprop(0.1, b2=1.0), "acprop: b2 must be in [0, 1), got 1"),
    (lambda: acprop(0.1, eps_root=-1.0), "acprop: eps_root must be in [0, inf), got -1"),
    (lambda: momo(-1.0), "momo: learning_rate must be in [0, inf), got -1"),
    (lambda: momo(beta=1.0), "momo: beta must be in [0, 1), got 1"),
    (lambda: momo(lower_bound=float("nan")), "momo: lower_bound must be in [-inf, inf], got nan"),
    (lambda: momo(weight_decay=-0.1), "momo: weight_decay must be in [0, inf), got -0.1"),
    (lambda: momo_adam(b2=1.0), "momo_adam: b2 must be in [0, 1), got 1"),
    (lambda: momo_adam(eps=-1.0), "momo_adam: eps must be in [0, inf), got -1"),
    (lambda: momo_adam(state_dtype="x"), "momo_adam: state_dtype must be a floating dtype"),
    (lambda: scale_by_adopt(b1=2.0), "scale_by_adopt: b1 must be in [0, 1), got 2"),
    (lambda: scale_by_ademamix(b3=-0.1), "scale_by_ademamix: b3 must be in [0, 1), got -0.1"),
    (lambda: scale_by_madgrad(0.1, momentum=-0.1),
     "scale_by_madgrad: momentum must be in [0, 1), got -0.1"),
    (lambda: scale_by_acprop(eps=-1.0), "scale_by_acprop: eps must be in [0, inf), got -1"),
]  # fmt: skip


@pytest.mark.parametrize("build,message", BAD, ids=[m.split(" must")[0] for _, m in BAD])
def test_bad_hyperparameters_name_the_argument(build, message):
    with pytest.raises(ValueError) as error:
        build()
    assert message in str(error.value)


def test_a_bfloat16_state_for_complex_moments_names_the_leaf():
    with pytest.raises(ValueError, match=r"cannot hold the complex moments of the leaf at \['z'\]"):
        adopt(0.1, state_dtype=BF16).init(complex_params())


@pytest.mark.parametrize(
    "tx",
    [scale_by_adopt(), scale_by_ademamix(), scale_by_simplified_ademamix(), scale_by_acprop(),
     scale_by_madgrad(0.1), scale_by_momo(), scale_by_momo_adam()],
    ids=["adopt", "ademamix", "simplified_ademamix", "acprop", "madgrad", "momo", "momo_adam"],
)  # fmt: skip
def test_a_tree_mismatch_names_the_path(tx):
    params = make_params()
    other = {**params, "head": [params["head"][0], jnp.zeros(4)]}
    with pytest.raises(ValueError, match=r"\['head'\]\[1\]"):
        tx.update(other, tx.init(params), other, value=1.0)


def test_madgrad_keeps_its_own_copy_of_the_start():
    params = make_params()
    state = madgrad(0.1).init(params)
    start = state[1].x0["dense"][0]
    assert start is not params["dense"][0]
    np.testing.assert_array_equal(start, params["dense"][0])
