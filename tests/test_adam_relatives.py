"""Adam's relatives (AdaBelief, RAdam, Yogi, Adan, NovoGrad, AdamaxW, NAdamW) against optax.

optax 0.2.8 is the oracle: 50 steps on conftest's nested tree and on a tree with a
complex64 leaf, with and without jit (the oracle runs under the same variant: optax's
RAdam computes rho_t in float32, where an eager and a jitted b2**t differ by an ulp
and move rho_1 = 1999 - 1998 visibly), schedules, vmap, state dtypes, masks and
argument errors.
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
from conftest import assert_trees_close, assert_vmap_equals_loop, grads_at, make_params, run
from test_complex import gradient as complex_gradient
from test_complex import params as complex_params

import gradtx
from gradtx.learners.adam_relatives import adabelief, adamaxw, adan, nadamw, novograd, radam, yogi
from gradtx.transforms.adan import ScaleByAdanState, scale_by_adan
from gradtx.transforms.belief import ScaleByBeliefState, scale_by_belief
from gradtx.transforms.novograd import ScaleByNovogradState, scale_by_novograd
from gradtx.transforms.radam import scale_by_radam
from gradtx.transforms.yogi import scale_by_yogi

STEPS = 50
BF16 = jnp.bfloat16
MASK = {"dense": [True, False], "conv": True, "head": [False, True]}  # a prefix of the tree


def _decay_matrices(params):
    return jax.tree.map(lambda p: p.ndim > 1, params)


def _lr_schedule(count):
    return 0.02 * 0.95 ** count.astype(jnp.float32)


def _wd_schedule(count):
    return 0.1 * jnp.minimum(1.0, (count + 1) / 10)


# name -> (gradtx learner, optax learner, arguments for both): positional where optax's are.
# Each learner twice: at optax's defaults with a learning-rate schedule (run on the complex
# tree), and with every argument moved off its default (on conftest's tree), weight-decay
# schedules and masks included where it decays.
LEARNERS = {
    "adabelief": (adabelief, optax.adabelief, (_lr_schedule,), {}),
    "adabelief arguments": (adabelief, optax.adabelief, (1e-2, 0.8, 0.99, 1e-12, 1e-14),
                            dict(nesterov=True)),
    "radam": (radam, optax.radam, (_lr_schedule,), {}),
    "radam arguments": (radam, optax.radam, (1e-2, 0.8, 0.99, 1e-6, 1e-10, 4.5),
                        dict(nesterov=True)),
    "yogi": (yogi, optax.yogi, (_lr_schedule,), {}),
    "yogi arguments": (yogi, optax.yogi, (1e-2, 0.8, 0.99, 1e-4), {}),
    "adan": (adan, optax.adan, (_lr_schedule,), {}),
    # eps_root = 0 is scale_by_adan's default (the learner's is 1e-8).
    "adan arguments": (adan, optax.adan, (1e-2, 0.9, 0.9, 0.95, 1e-6, 0.0, _wd_schedule, MASK),
                       {}),
    "novograd": (novograd, optax.novograd, (_lr_schedule,), {}),
    # eps = 1e-8 is scale_by_novograd's default (the learner's is 1e-6).
    "novograd arguments": (novograd, optax.novograd, (1e-2, 0.8, 0.5, 1e-8, 1e-10, 0.1), {}),
    "adamaxw": (adamaxw, optax.adamaxw, (_lr_schedule,), {}),
    "adamaxw arguments": (adamaxw, optax.adamaxw, (1e-2, 0.8, 0.99, 1e-6, _wd_schedule,
                                                   _decay_matrices), {}),
    "nadamw": (nadamw, optax.nadamw, (_lr_schedule,), {}),
    "nadamw arguments": (nadamw, optax.nadamw, (1e-2, 0.8, 0.99, 1e-6, 1e-9, None, _wd_schedule,
                                                 MASK),
                         {}),
}  # fmt: skip

# Arguments of the blocks that their learners do not pass (each block is also the first
# member of its learner above), followed by a -0.01 scale.
BLOCKS = {
    "scale_by_yogi": (scale_by_yogi, optax.scale_by_yogi, (0.8, 0.99, 1e-4, 1e-8, 0.5), {}),
}


# Built once per name: a test that runs the same transform again (under the same variant)
# reuses its compiled update instead of compiling an equal one.
@functools.cache
def _block_pair(name):
    ours, theirs, args, kwargs = BLOCKS[name]
    return (
        gradtx.chain(ours(*args, **kwargs), gradtx.scale(-0.01)),
        optax.chain(theirs(*args, **kwargs), optax.scale(-0.01)),
    )


@functools.cache
def _learner_pair(name):
    ours, theirs, args, kwargs = LEARNERS[name]
    return ours(*args, **kwargs), theirs(*args, **kwargs)


def _run_both(variant, ours, theirs, params, steps=STEPS, gradient=grads_at):
    """Both transforms on the same gradient stream; the final params and states."""
    results = []
    for tx, apply in ((ours, gradtx.apply_updates), (theirs, optax.apply_updates)):
        update, p = variant(tx.update), params
        state = tx.init(p)
        for t in range(steps):
            u, state = update(gradient(p, t), state, p)
            p = apply(p, u)
        results.append((p, state))
    return results


class MatchesOptax(chex.TestCase, parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*((n, n) for n in LEARNERS if "arguments" in n))
    def test_learner_fifty_steps(self, name):
        ours, theirs = _learner_pair(name)
        (p1, s1), (p2, s2) = _run_both(self.variant, ours, theirs, make_params())
        assert_trees_close(p1, p2)
        # The first block's state is optax's, field for field: state[0].mu ports.
        assert type(s1[0]).__name__ == type(s2[0]).__name__
        assert s1[0]._fields == s2[0]._fields
        assert_trees_close(tuple(s1[0]), tuple(s2[0]))

    @chex.variants(with_jit=True)
    @parameterized.named_parameters(*((n, n) for n in BLOCKS))
    def test_block_fifty_steps(self, name):
        ours, theirs = _block_pair(name)
        (p1, s1), (p2, s2) = _run_both(self.variant, ours, theirs, make_params())
        assert_trees_close(p1, p2)
        assert type(s1[0]).__name__ == type(s2[0]).__name__
        assert s1[0]._fields == s2[0]._fields
        assert_trees_close(tuple(s1[0]), tuple(s2[0]))

    @chex.variants(with_jit=True)
    def test_novograd_weight_decay_schedule_as_optax_injects_it(self):
        """optax's novograd cannot take a schedule for weight_decay (it multiplies the
        function); gradtx evaluates it at the updates already applied, which is what
        optax.inject_hyperparams hands optax's novograd at each step."""
        ours = novograd(_lr_schedule, weight_decay=_wd_schedule)
        theirs = optax.inject_hyperparams(optax.novograd)(_lr_schedule, weight_decay=_wd_schedule)
        (p1, _), (p2, _) = _run_both(self.variant, ours, theirs, make_params(3))
        assert_trees_close(p1, p2)


# Complex leaves: every learner has optax's complex rule; each runs at optax's defaults.
DEFAULTS = [n for n in LEARNERS if "arguments" not in n]


def _real_second_moments(state):
    """The second moments of the complex leaf "z" (nu, or adan's n), with their dtypes."""
    found = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        name = jax.tree_util.keystr(path)
        if "'z'" in name and any(f".{f}[" in name for f in ("nu", "n")):
            found.append((name, leaf.dtype))
    return found


class ComplexMatchesOptax(chex.TestCase, parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*((n, n) for n in DEFAULTS))
    def test_fifty_steps(self, name):
        ours, theirs = _learner_pair(name)
        (p1, s1), (p2, _) = _run_both(
            self.variant, ours, theirs, complex_params(), gradient=complex_gradient
        )
        assert p1["z"].dtype == jnp.complex64 and p1["w"].dtype == jnp.float32
        assert_trees_close(p1, p2)
        moments = _real_second_moments(s1)
        assert moments and all(dtype == jnp.float32 for _, dtype in moments), moments


# vmap: over the learning rate for every learner, and over two hyperparameters that enter
# more than a product (radam's b2 sets rho_t; novograd's decay is an operand of its cond).
VMAP_STEPS = 10


def _vmap_params():
    """A small tree for the vmap runs (what is batched is the hyperparameter, not the tree):
    a matrix and a scalar, so each run compiles quickly."""
    params = make_params()
    return {"w": params["dense"][0], "b": params["head"][0]}


def _scan_run(opt, steps=VMAP_STEPS):
    """conftest.run as one lax.scan (a single step to compile): gradients 0.5 p + noise."""
    zeros = jax.tree.map(jnp.zeros_like, _vmap_params())
    noise = jax.tree.map(lambda *n: jnp.stack(n), *(grads_at(zeros, t) for t in range(steps)))

    def step(carry, noise):
        p, state = carry
        u, state = opt.update(jax.tree.map(lambda p, n: 0.5 * p + n, p, noise), state, p)
        return (gradtx.apply_updates(p, u), state), None

    params = _vmap_params()
    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), noise)
    return params


@pytest.mark.parametrize(
    "make",
    [
        lambda lr: adabelief(lr),
        lambda lr: radam(lr),
        lambda lr: yogi(lr),
        lambda lr: adan(lr, weight_decay=0.1),
        lambda lr: novograd(lr, weight_decay=0.1),
        lambda lr: adamaxw(lr, mask={"w": True, "b": False}),
        lambda lr: nadamw(lr),
    ],
    ids=["adabelief", "radam", "yogi", "adan", "novograd", "adamaxw", "nadamw"],
)
def test_vmap_over_learning_rate(make):
    lrs = np.geomspace(1e-3, 1e-1, 4).astype(np.float32)
    assert_vmap_equals_loop(lambda lr: _scan_run(make(lr)), lrs)


def test_vmap_over_novograd_weight_decay():
    """The decay is an operand of novograd's cond: batched, the cond still takes one branch."""
    values = np.asarray([0.0, 0.1, 0.5], np.float32)
    assert_vmap_equals_loop(lambda wd: _scan_run(novograd(1e-2, weight_decay=wd)), values)


def test_vmapped_radam_b2_is_optax_radam():
    """A traced b2 gives optax's numbers for each b2 (rho_inf is computed from it)."""
    values = np.asarray([0.99, 0.999], np.float32)
    batched = jax.jit(jax.vmap(lambda b2: _scan_run(radam(1e-2, b2=b2))))(values)
    expected = jax.jit(lambda b2: _scan_run(optax.radam(1e-2, b2=b2)))
    for i, b2 in enumerate(values):
        assert_trees_close(jax.tree.map(lambda x, i=i: x[i], batched), expected(b2))


# State dtypes.
def _state_arrays(state):
    return [x for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.inexact)]


@pytest.mark.parametrize("name", [n for n in LEARNERS if "arguments" in n])
def test_bfloat16_state_runs_close_to_float32(name):
    ours, _, args, kwargs = LEARNERS[name]
    opt16, (opt32, _) = ours(*args, **kwargs, state_dtype=BF16), _learner_pair(name)
    params = make_params()
    state = opt16.init(params)
    assert _state_arrays(state) and all(x.dtype == BF16 for x in _state_arrays(state))
    p16, s16 = params, state
    update16 = jax.jit(opt16.update)
    for t in range(STEPS):
        u, s16 = update16(grads_at(p16, t), s16, p16)
        p16 = gradtx.apply_updates(p16, u)
    assert all(x.dtype == BF16 for x in _state_arrays(s16)), "the state stays bfloat16"
    p32 = run(opt32, params, STEPS, update=jax.jit(opt32.update))  # compiled by MatchesOptax
    # Within 2% of how far the float32 run moved the params (0.2-0.6% here).
    moved = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
        jax.tree.leaves(p32), jax.tree.leaves(params), strict=True))  # fmt: skip
    gap = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
        jax.tree.leaves(p16), jax.tree.leaves(p32), strict=True))  # fmt: skip
    assert moved > 0.1 and gap < 0.02 * moved, (gap, moved)


class MuDtypeMatchesOptax(chex.TestCase, parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        ("scale_by_novograd", lambda m: m(0.9, 0.25, 1e-8, 0.0, 0.1, BF16), scale_by_novograd,
         optax.scale_by_novograd),
    )  # fmt: skip
    def test_fifty_steps(self, build, ours, theirs):
        self._fifty_steps(build, ours, theirs)

    # nadamw is chained from the same blocks as adamw, whose mu_dtype test_optax_dtypes runs
    # both ways: jit only.
    @chex.variants(with_jit=True)
    @parameterized.named_parameters(
        ("nadamw", lambda m: m(1e-2, 0.9, 0.99, 1e-8, 0.0, BF16, 0.1), nadamw, optax.nadamw),
    )
    def test_fifty_steps_jit(self, build, ours, theirs):
        self._fifty_steps(build, ours, theirs)

    def _fifty_steps(self, build, ours, theirs):
        (p1, s1), (p2, s2) = _run_both(self.variant, build(ours), build(theirs), make_params())
        assert_trees_close(p1, p2)
        first1, first2 = (s[0] if isinstance(s, tuple) and not hasattr(s, "_fields") else s
                          for s in (s1, s2))  # fmt: skip
        assert first1.mu["dense"][0].dtype == first2.mu["dense"][0].dtype == BF16
        assert_trees_close(first1.mu, first2.mu)


def test_novograd_mu_dtype_update_is_the_stored_momentum():
    """optax hands back the momentum as stored (rounded to bfloat16)."""
    tx = scale_by_novograd(mu_dtype=BF16)
    g = {"w": jnp.linspace(-1.0, 1.0, 7) / 3}
    u, state = tx.update(g, tx.init(g))
    assert u["w"].dtype == BF16
    np.testing.assert_array_equal(u["w"], state.mu["w"])


# Arguments: optax's positions, names and defaults; state field names; errors.
PAIRS = [
    (adabelief, optax.adabelief), (radam, optax.radam), (yogi, optax.yogi), (adan, optax.adan),
    (novograd, optax.novograd), (adamaxw, optax.adamaxw), (nadamw, optax.nadamw),
    (scale_by_belief, optax.scale_by_belief), (scale_by_radam, optax.scale_by_radam),
    (scale_by_yogi, optax.scale_by_yogi), (scale_by_adan, optax.scale_by_adan),
    (scale_by_novograd, optax.scale_by_novograd),
]  # fmt: skip


@pytest.mark.parametrize("ours,theirs", PAIRS, ids=[o.__name__ for o, _ in PAIRS])
def test_signature_is_optax_then_keyword_only_options(ours, theirs):
    mine = list(inspect.signature(ours).parameters.values())
    their = list(inspect.signature(theirs).parameters.values())
    assert [(p.name, p.kind, p.default) for p in mine[: len(their)]] == [
        (p.name, p.kind, p.default) for p in their
    ]
    assert [p.name for p in mine[len(their) :]] == ["state_dtype"]
    assert all(p.kind is p.KEYWORD_ONLY for p in mine[len(their) :])


def test_state_fields_are_optax():
    assert ScaleByBeliefState._fields == optax.ScaleByBeliefState._fields
    assert ScaleByAdanState._fields == optax.ScaleByAdanState._fields
    assert ScaleByNovogradState._fields == optax.ScaleByNovogradState._fields
    for ours, theirs in [(scale_by_radam, optax.scale_by_radam),
                         (scale_by_yogi, optax.scale_by_yogi)]:  # fmt: skip
        params = make_params()
        assert type(ours().init(params)).__name__ == type(theirs().init(params)).__name__


BAD = [
    (lambda: adabelief(0.1, b1=1.5), "adabelief: b1 must be in [0, 1), got 1.5"),
    (lambda: adabelief(0.1, eps_root=-1.0), "adabelief: eps_root must be in [0, inf), got -1"),
    (lambda: adabelief(-0.1), "adabelief: learning_rate must be in [0, inf), got -0.1"),
    (lambda: radam(0.1, b2=1.0), "radam: b2 must be in [0, 1), got 1"),
    (lambda: radam(0.1, threshold=-1.0), "radam: threshold must be in [0, inf], got -1"),
    (lambda: radam(0.1, threshold=float("nan")), "radam: threshold must be in [0, inf], got nan"),
    (lambda: yogi(0.1, eps=-1e-3), "yogi: eps must be in [0, inf), got -0.001"),
    (lambda: yogi(0.1, b2=-0.5), "yogi: b2 must be in [0, 1), got -0.5"),
    (lambda: adan(0.1, b3=1.0), "adan: b3 must be in [0, 1), got 1"),
    (lambda: adan(0.1, weight_decay=-0.1), "adan: weight_decay must be in [0, inf), got -0.1"),
    (lambda: novograd(0.1, b1=2.0), "novograd: b1 must be in [0, 1), got 2"),
    (lambda: novograd(0.1, weight_decay=-1.0), "novograd: weight_decay must be in [0, inf)"),
    (lambda: novograd(0.1, eps=-1.0), "novograd: eps must be in [0, inf), got -1"),
    (lambda: adamaxw(0.1, b2=2.0), "adamaxw: b2 must be in [0, 1), got 2"),
    (lambda: adamaxw(0.1, weight_decay=-1.0), "adamaxw: weight_decay must be in [0, inf)"),
    (lambda: nadamw(0.1, eps_root=-1.0), "nadamw: eps_root must be in [0, inf), got -1"),
    (lambda: nadamw(0.1, mu_dtype=jnp.int32), "nadamw: mu_dtype must be a floating or complex"),
    (lambda: nadamw(0.1, mu_dtype=BF16, state_dtype=BF16),
     "nadamw: give mu_dtype or state_dtype, not both"),
    (lambda: yogi(0.1, state_dtype=jnp.int8), "yogi: state_dtype must be a floating dtype"),
    (lambda: novograd(0.1, state_dtype="x"), "novograd: state_dtype must be a floating dtype"),
    (lambda: scale_by_belief(eps=-1.0), "scale_by_belief: eps must be in [0, inf), got -1"),
    (lambda: scale_by_radam(b1=1.0), "scale_by_radam: b1 must be in [0, 1), got 1"),
    (lambda: scale_by_yogi(initial_accumulator_value=-1.0),
     "scale_by_yogi: initial_accumulator_value must be in [0, inf), got -1"),
    (lambda: scale_by_adan(eps_root=-1.0), "scale_by_adan: eps_root must be in [0, inf)"),
    (lambda: scale_by_novograd(mu_dtype="nope"),
     "scale_by_novograd: mu_dtype must be a floating or complex dtype"),
    (lambda: scale_by_novograd(mu_dtype=BF16, state_dtype=BF16),
     "scale_by_novograd: give mu_dtype or state_dtype, not both"),
]  # fmt: skip


@pytest.mark.parametrize("build,message", BAD, ids=[m.split(" must")[0] for _, m in BAD])
def test_bad_hyperparameters_name_the_argument(build, message):
    with pytest.raises(ValueError) as error:
        build()
    assert message in str(error.value)


def test_novograd_needs_params_only_to_decay():
    g = make_params()
    plain = novograd(0.1)  # optax always wants params; without a decay gradtx does not
    u, _ = plain.update(g, plain.init(g))
    expected, _ = optax.novograd(0.1).update(g, optax.novograd(0.1).init(g), g)
    assert_trees_close(u, expected)
    decaying = scale_by_novograd(weight_decay=0.1)
    with pytest.raises(ValueError, match="scale_by_novograd: update needs params"):
        decaying.update(g, decaying.init(g))


@pytest.mark.parametrize("tx", [scale_by_adan(), scale_by_belief(), scale_by_novograd()],
                         ids=["adan", "belief", "novograd"])  # fmt: skip
def test_a_tree_mismatch_names_the_path(tx):
    params = make_params()
    other = {**params, "head": [params["head"][0], jnp.zeros(4)]}
    with pytest.raises(ValueError, match=r"\['head'\]\[1\]"):
        tx.update(other, tx.init(params), other)
