"""The learning-rate-free learners (Prodigy, D-Adaptation AdamW, DoG, DoWG, COCOB, Mechanic)
against optax.contrib.

optax 0.2.8 is the oracle: 50 steps on conftest's nested tree, with and without jit
(the oracle under the same variant), at optax's defaults and with every argument moved
off its default (learning-rate and weight-decay schedules, masks), the scalar estimates
(d, distances, Mechanic's betting state) compared field by field with the params.
Complex leaves: DoG and DoWG against optax on a tree with a complex64 leaf; Mechanic,
whose complex inner product fails in optax, against itself on the real view of that
tree; Prodigy, D-Adaptation and COCOB, whose complex rules in optax are wrong, raise.
"""

from __future__ import annotations

import functools
import inspect

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest
from absl.testing import parameterized
from conftest import assert_trees_close, assert_vmap_equals_loop, grads_at, make_params
from optax.contrib import _dog as optax_dog  # its blocks are not in optax.contrib's surface
from test_complex import gradient as complex_gradient
from test_complex import params as complex_params

import gradtx
from gradtx.learners.lr_free import cocob, dog, dowg
from gradtx.schedules import reduce_on_plateau
from gradtx.testing import check_transform
from gradtx.transforms.cocob import COCOBState, scale_by_cocob
from gradtx.transforms.dadapt import DAdaptAdamWState, dadapt_adamw
from gradtx.transforms.dog import DoGState, DoWGState, scale_by_dog, scale_by_dowg
from gradtx.transforms.mechanic import MechanicState, mechanize
from gradtx.transforms.prodigy import ProdigyState, prodigy

STEPS = 50
BF16 = jnp.bfloat16
MASK = {"dense": [True, False], "conv": True, "head": [False, True]}  # a prefix of the tree


def _lr_schedule(count):
    """Warm-up to 1 over 10 steps, then a decay: the schedule shape these learners expect."""
    count = count.astype(jnp.float32)
    return jnp.minimum(1.0, (count + 1) / 10) * 0.98**count


def _small_lr_schedule(count):
    return 0.5 * _lr_schedule(count)


def _wd_schedule(count):
    return 0.05 * jnp.minimum(1.0, (count + 1) / 10)


def _decay_matrices(params):
    return jax.tree.map(lambda p: p.ndim > 1, params)


# name -> (gradtx factory, optax factory, positional arguments (optax's order), index of the
# block whose state is optax's learner's own: None for the whole state).
LEARNERS = {
    "prodigy": (prodigy, optax.contrib.prodigy, (), None),
    "prodigy arguments": (prodigy, optax.contrib.prodigy,
                          (_lr_schedule, (0.8, 0.99), 0.95, 1e-6, 1e-3, 2.0, 0.1, True), None),
    "prodigy beta3 from beta2": (prodigy, optax.contrib.prodigy,
                                 (_lr_schedule, (0.85, 0.995), None, 1e-7, 1e-4, 0.5, 0.05), None),
    "dadapt_adamw": (dadapt_adamw, optax.contrib.dadapt_adamw, (), None),
    "dadapt_adamw arguments": (dadapt_adamw, optax.contrib.dadapt_adamw,
                               (_lr_schedule, (0.8, 0.99), 1e-6, 1e-3, 0.1), None),
    "dog": (dog, optax.contrib.dog, (), 1),
    "dog arguments": (dog, optax.contrib.dog,
                      (_small_lr_schedule, ("distance", 0.1), 1e-6, _wd_schedule, MASK), 1),
    "dog learning_rate start": (dog, optax.contrib.dog,
                                (_small_lr_schedule, ("learning_rate", 0.01), 1e-6, 0.01,
                                 _decay_matrices), 1),
    "dowg": (dowg, optax.contrib.dowg, (), 1),
    "dowg arguments": (dowg, optax.contrib.dowg,
                       (_small_lr_schedule, 0.01, 1e-6, _wd_schedule, MASK), 1),
    "cocob": (cocob, optax.contrib.cocob, (), 2),
    "cocob arguments": (cocob, optax.contrib.cocob,
                        (_small_lr_schedule, 50.0, 1e-6, _wd_schedule, MASK), 2),
}  # fmt: skip

# Mechanic wraps a learner: each side wraps its own library's.
MECHANIZED = {
    "mechanize": (lambda m: m(gradtx.adam(_lr_schedule)), lambda m: m(optax.adam(_lr_schedule))),
    "mechanize arguments": (
        lambda m: m(gradtx.sgd(_small_lr_schedule, 0.9), 0.1, 1e-6, 1e-4, 3),
        lambda m: m(optax.sgd(_small_lr_schedule, 0.9), 0.1, 1e-6, 1e-4, 3),
    ),
}

# The blocks on their own (their learners above cover their arguments), then a -0.01 scale
# (COCOB's is already a descent step).
BLOCKS = {
    "scale_by_dog heuristic": (scale_by_dog, optax_dog.scale_by_dog, (("heuristic", 1e-4),)),
    "scale_by_dowg": (scale_by_dowg, optax_dog.scale_by_dowg, (0.5, 1e-6)),
    "scale_by_cocob": (scale_by_cocob, optax.contrib.scale_by_cocob, (20.0, 1e-5)),
}


@functools.cache
def _pair(name):
    if name in MECHANIZED:
        ours, theirs = MECHANIZED[name]
        return ours(mechanize), theirs(optax.contrib.mechanize)
    if name in BLOCKS:
        ours, theirs, args = BLOCKS[name]
        scale = 1.0 if "cocob" in name else -0.01
        return (
            gradtx.chain(ours(*args), gradtx.scale(scale)),
            optax.chain(theirs(*args), optax.scale(scale)),
        )
    ours, theirs, args, _ = LEARNERS[name]
    return ours(*args), theirs(*args)


def _own_state(name, state):
    """The learner's own NamedTuple in its state (the block's state in a chain)."""
    if name in BLOCKS:
        return state[0]
    index = LEARNERS[name][3] if name in LEARNERS else None
    return state if index is None else state[index]


def _run_both(variant, ours, theirs, params, steps=STEPS, gradient=grads_at, extras=None):
    """Both transforms on the same gradient stream; the final params and states."""
    results = []
    for tx, apply in ((ours, gradtx.apply_updates), (theirs, optax.apply_updates)):
        update, p = variant(tx.update), params
        state = tx.init(p)
        for t in range(steps):
            u, state = update(gradient(p, t), state, p, **(extras(t) if extras else {}))
            p = apply(p, u)
        results.append((p, state))
    return results


def _assert_same_state(ours, theirs):
    """optax's state, field for field (the wrapped learner's own state aside)."""
    assert type(ours).__name__ == type(theirs).__name__
    assert ours._fields == theirs._fields
    fields = [f for f in ours._fields if f != "base_optimizer_state"]
    for field in fields:
        a, b = getattr(ours, field), getattr(theirs, field)
        assert jax.tree.structure(a) == jax.tree.structure(b), field
        jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7), a, b)


class MatchesOptax(chex.TestCase, parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*((n, n) for n in [*LEARNERS, *MECHANIZED, *BLOCKS]))
    def test_fifty_steps(self, name):
        ours, theirs = _pair(name)
        (p1, s1), (p2, s2) = _run_both(self.variant, ours, theirs, make_params())
        assert_trees_close(p1, p2, rtol=1e-5)
        _assert_same_state(_own_state(name, s1), _own_state(name, s2))

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("prodigy", prodigy), ("dadapt_adamw", dadapt_adamw))
    def test_weight_decay_schedule_as_optax_injects_it(self, ours):
        """optax's weight_decay is a number; gradtx's may be a schedule, evaluated at the
        updates already applied: what optax.inject_hyperparams hands optax's each step."""
        theirs = getattr(optax.contrib, ours.__name__)
        injected = optax.inject_hyperparams(theirs)(_lr_schedule, weight_decay=_wd_schedule)
        mine = ours(_lr_schedule, weight_decay=_wd_schedule)
        (p1, s1), (p2, s2) = _run_both(self.variant, mine, injected, make_params(3))
        assert_trees_close(p1, p2, rtol=1e-5)
        np.testing.assert_allclose(s1.estim_lr, s2.inner_state.estim_lr, rtol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_mechanize_passes_extras_to_its_learner(self):
        """reduce_on_plateau reads `value`: it must reach the wrapped learner's chain."""
        ours = mechanize(gradtx.chain(gradtx.sgd(1.0), reduce_on_plateau(0.5, 2, rule="optax")))
        theirs = optax.contrib.mechanize(
            optax.chain(optax.sgd(1.0), optax.contrib.reduce_on_plateau(0.5, 2))
        )
        (p1, s1), (p2, s2) = _run_both(
            self.variant, ours, theirs, make_params(), steps=20, extras=lambda t: {"value": 1.0}
        )
        assert_trees_close(p1, p2, rtol=1e-5)
        _assert_same_state(s1, s2)
        scale = gradtx.tree.get(s1.base_optimizer_state, "scale")
        assert float(scale) < 0.1  # the plateau was seen: the extra arrived


# Complex leaves.
class ComplexLeaves(chex.TestCase, parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        ("dog", lambda m: m.dog(), 1),
        ("dog_distance", lambda m: m.dog(0.5, ("distance", 0.1), weight_decay=0.01), 1),
        ("dowg", lambda m: m.dowg(), 1),
    )
    def test_fifty_steps_as_optax(self, build, index):
        """optax's norms take moduli: its DoG and DoWG are right for complex leaves."""
        ours, theirs = build(gradtx.learners.lr_free), build(optax.contrib)
        (p1, s1), (p2, s2) = _run_both(
            self.variant, ours, theirs, complex_params(), gradient=complex_gradient
        )
        assert p1["z"].dtype == jnp.complex64
        assert_trees_close(p1, p2, rtol=1e-5)
        own = s1[index]
        _assert_same_state(own, s2[index])
        scalars = [x for x in own if isinstance(x, jax.Array) and x.ndim == 0]
        assert len(scalars) >= 2 and not any(jnp.iscomplexobj(x) for x in scalars)

    @chex.variants(with_jit=True, without_jit=True)
    def test_mechanize_is_its_real_view(self):
        """Complex numbers as pairs of reals: h_t = Re<g, Delta>, norms of the moduli."""

        def split(tree):
            return {"re": tree["z"].real, "im": tree["z"].imag, "w": tree["w"]}

        def real_gradient(p, t):
            g = complex_gradient({"z": p["re"] + 1j * p["im"], "w": p["w"]}, t)
            return split(g)

        opt = mechanize(gradtx.sgd(0.5, 0.9))
        runs = []
        for params, gradient in ((complex_params(), complex_gradient),
                                 (split(complex_params()), real_gradient)):  # fmt: skip
            update, state = self.variant(opt.update), opt.init(params)
            for t in range(STEPS):
                u, state = update(gradient(params, t), state, params)
                params = gradtx.apply_updates(params, u)
            runs.append(params)
        pz, pr = runs
        assert pz["z"].dtype == jnp.complex64
        moved = np.max(np.abs(pz["z"] - complex_params()["z"]))
        assert moved > 0.1, moved
        np.testing.assert_allclose(pz["z"].real, pr["re"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(pz["z"].imag, pr["im"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(pz["w"], pr["w"], rtol=1e-5, atol=1e-6)

    @parameterized.named_parameters(
        ("prodigy", lambda: prodigy()),
        ("dadapt_adamw", lambda: dadapt_adamw()),
        ("cocob", lambda: cocob()),
        ("scale_by_cocob", lambda: scale_by_cocob()),
    )
    def test_no_complex_rule_names_the_leaf(self, build):
        """optax runs these on complex leaves with g * g for |g|^2 and complex maxima."""
        tx, p = build(), complex_params()
        with pytest.raises(ValueError, match=r"the leaf at \['z'\] is complex64"):
            tx.init(p)
        real = {"z": jnp.zeros((3, 2)), "w": p["w"]}  # built real, handed a complex gradient
        with pytest.raises(ValueError, match=r"the leaf at \['z'\] is complex64"):
            tx.update(complex_gradient(p, 0), tx.init(real), real)


@pytest.mark.filterwarnings("ignore:Casting from complex to real")
def test_optax_prodigy_on_complex_leaves_is_wrong():
    """Why gradtx raises: optax's estimate of a real distance comes out complex."""
    opt, p = optax.contrib.prodigy(estim_lr0=0.1), complex_params()
    state = opt.init(p)
    for t in range(3):
        u, state = opt.update(complex_gradient(p, t), state, p)
        p = optax.apply_updates(p, u)
    assert jnp.iscomplexobj(state.estim_lr) and jnp.iscomplexobj(state.exp_avg_sq["z"])


# gradtx.testing.check_transform on every learner and block.
TRANSFORMS = {
    "prodigy": lambda: prodigy(weight_decay=0.01),
    "dadapt_adamw": lambda: dadapt_adamw(weight_decay=0.01),
    "dog": lambda: dog(),
    "dowg": lambda: dowg(),
    "cocob": lambda: cocob(weight_decay=0.01),
    "mechanize": lambda: mechanize(gradtx.adam(1e-2)),
    "scale_by_dog": lambda: scale_by_dog(("learning_rate", 0.1)),
    "scale_by_dowg": lambda: scale_by_dowg(),
    "scale_by_cocob": lambda: scale_by_cocob(),
}
COMPLEX_RULE = {"dog", "dowg", "mechanize", "scale_by_dog", "scale_by_dowg"}
EXTRA = {"value": 1.0, "batch_size": 8}


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_check_transform(name):
    params = {**make_params(), "step": jnp.asarray(3)}  # an integer leaf, left alone
    tx = TRANSFORMS[name]()
    if name.startswith("scale_by"):  # blocks see float leaves only, as in their learners
        params = make_params()
    check_transform(tx, params, extra=EXTRA, name=name)


@pytest.mark.parametrize("name", sorted(COMPLEX_RULE))
def test_check_transform_on_complex_leaves(name):
    check_transform(TRANSFORMS[name](), complex_params(), extra=EXTRA, name=name)


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_donated_state_and_params(name):
    """The state keeps its own copy of the params (optax's holds the params' arrays, so
    a step donating both, as make_train_step does, would donate each buffer twice)."""
    tx, params = TRANSFORMS[name](), make_params()

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(params, state):
        updates, state = tx.update(grads_at(params, 0), state, params)
        return gradtx.apply_updates(params, updates), state

    params, state = step(params, tx.init(params))
    step(params, state)


# vmap: over the learning rate where there is one that is not a factor of the step alone,
# and over the hyperparameters that set the estimates.
VMAP_STEPS = 10


def _vmap_params():
    params = make_params()
    return {"w": params["dense"][0], "b": params["head"][0]}


def _scan_run(opt, steps=VMAP_STEPS):
    """conftest.run as one lax.scan: gradients 0.5 p + noise."""
    zeros = jax.tree.map(jnp.zeros_like, _vmap_params())
    noise = jax.tree.map(lambda *n: jnp.stack(n), *(grads_at(zeros, t) for t in range(steps)))

    def step(carry, noise):
        p, state = carry
        u, state = opt.update(jax.tree.map(lambda p, n: 0.5 * p + n, p, noise), state, p)
        return (gradtx.apply_updates(p, u), state), None

    params = _vmap_params()
    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), noise)
    return params


VMAPS = {
    "prodigy estim_lr0": (lambda x: prodigy(estim_lr0=x), [1e-6, 1e-3, 1e-1]),
    "prodigy learning_rate": (lambda x: prodigy(x, estim_lr0=1e-2), [0.1, 0.5, 1.0]),
    "dadapt_adamw estim_lr0": (lambda x: dadapt_adamw(estim_lr0=x), [1e-6, 1e-3, 1e-1]),
    "dadapt_adamw eps": (lambda x: dadapt_adamw(eps=x, estim_lr0=1e-2), [1e-8, 1e-4, 1e-1]),
    "dog learning_rate": (lambda x: dog(x), [0.1, 0.5, 1.0]),
    "dog init_step": (lambda x: dog(init_step=("distance", x)), [1e-4, 1e-2, 1e-1]),
    "dowg learning_rate": (lambda x: dowg(x), [0.1, 0.5, 1.0]),
    "dowg init_estim_sq_dist": (lambda x: dowg(init_estim_sq_dist=x), [1e-4, 1e-2, 1.0]),
    # A constant learning rate scales every gradient alike, which COCOB's bet is blind to.
    "cocob learning_rate decay": (lambda x: cocob(lambda c: x**c), [0.8, 0.9, 1.0]),
    "cocob weight_decay": (lambda x: cocob(weight_decay=x), [0.0, 0.1, 0.5]),
    "cocob alpha": (lambda x: cocob(alpha=x), [10.0, 50.0, 100.0]),
    "mechanize s_init": (lambda x: mechanize(gradtx.sgd(1.0), s_init=x), [1e-6, 1e-4, 1e-2]),
    "mechanize weight_decay": (
        lambda x: mechanize(gradtx.sgd(1.0), x, s_init=1e-2),
        [0.0, 1.0, 10.0],
    ),
}


@pytest.mark.parametrize("name", sorted(VMAPS))
def test_vmap_over_a_hyperparameter(name):
    build, values = VMAPS[name]
    values = np.asarray(values, np.float32)
    assert_vmap_equals_loop(lambda x: _scan_run(build(x)), values, rtol=1e-5, atol=1e-6)
    # The values matter: the runs differ (a hyperparameter dropped on the way would not).
    runs = [jax.tree.leaves(jax.jit(lambda x: _scan_run(build(x)))(v)) for v in values[[0, -1]]]
    assert not all(np.allclose(a, b) for a, b in zip(*runs, strict=True))


# State dtypes: bfloat16 moments.
STATE_DTYPES = {
    "prodigy": (lambda d: prodigy(estim_lr0=1e-3, state_dtype=d),
                ("exp_avg", "exp_avg_sq", "grad_sum"), ("params0",)),
    "dadapt_adamw": (lambda d: dadapt_adamw(estim_lr0=1e-3, state_dtype=d),
                     ("exp_avg", "exp_avg_sq", "grad_sum"), ()),
    "cocob": (lambda d: cocob(state_dtype=d),
              ("cumulative_gradients", "scale", "subgradients", "reward"), ("init_particles",)),
    "mechanize": (lambda d: mechanize(gradtx.adam(1.0, state_dtype=d)), (), ("x0",)),
}  # fmt: skip


def _own(state):
    return state if hasattr(state, "_fields") else next(s for s in state if s._fields)


@pytest.mark.parametrize("name", sorted(STATE_DTYPES))
def test_bfloat16_state_runs_close_to_float32(name):
    build, narrow, wide = STATE_DTYPES[name]
    params = make_params()
    runs = {}
    for dtype in (None, BF16):
        opt = build(dtype)
        update, p, state = jax.jit(opt.update), params, opt.init(params)
        for t in range(STEPS):
            u, state = update(grads_at(p, t), state, p)
            p = gradtx.apply_updates(p, u)
        runs[dtype] = p, state
    _, state = runs[BF16]
    own = _own(state)
    for field in narrow:
        assert all(x.dtype == BF16 for x in jax.tree.leaves(getattr(own, field))), field
    for field in wide:  # the initial params: their rounding would swamp the distance
        assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(getattr(own, field))), field
    if name == "mechanize":
        adam = gradtx.tree.get(state, "ScaleByAdamState")
        assert all(x.dtype == BF16 for x in jax.tree.leaves((adam.mu, adam.nu)))
    moved = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
        jax.tree.leaves(runs[None][0]), jax.tree.leaves(params), strict=True))  # fmt: skip
    gap = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
        jax.tree.leaves(runs[BF16][0]), jax.tree.leaves(runs[None][0]), strict=True))  # fmt: skip
    assert moved > 0.1 and gap < 0.05 * moved, (gap, moved)


# Arguments: optax's positions, names and defaults; state fields; errors.
PAIRS = [
    (prodigy, optax.contrib.prodigy, ["state_dtype"]),
    (dadapt_adamw, optax.contrib.dadapt_adamw, ["state_dtype"]),
    (dog, optax.contrib.dog, []),
    (dowg, optax.contrib.dowg, []),
    (cocob, optax.contrib.cocob, ["state_dtype"]),
    (mechanize, optax.contrib.mechanize, []),
    (scale_by_dog, optax_dog.scale_by_dog, []),
    (scale_by_dowg, optax_dog.scale_by_dowg, []),
    (scale_by_cocob, optax.contrib.scale_by_cocob, ["state_dtype"]),
]


@pytest.mark.parametrize("ours,theirs,options", PAIRS, ids=[o.__name__ for o, _, _ in PAIRS])
def test_signature_is_optax_then_keyword_only_options(ours, theirs, options):
    mine = list(inspect.signature(ours).parameters.values())
    their = list(inspect.signature(theirs).parameters.values())
    assert [(p.name, p.kind, p.default) for p in mine[: len(their)]] == [
        (p.name, p.kind, p.default) for p in their
    ]
    assert [p.name for p in mine[len(their) :]] == options
    assert all(p.kind is p.KEYWORD_ONLY for p in mine[len(their) :])


@pytest.mark.parametrize(
    "ours,theirs",
    [(ProdigyState, optax.contrib.ProdigyState), (DAdaptAdamWState, optax.contrib.DAdaptAdamWState),
     (DoGState, optax.contrib.DoGState), (DoWGState, optax.contrib.DoWGState),
     (COCOBState, optax.contrib.COCOBState), (MechanicState, optax.contrib.MechanicState)],
)  # fmt: skip
def test_state_fields_are_optax(ours, theirs):
    assert ours.__name__ == theirs.__name__ and ours._fields == theirs._fields


BAD = [
    (lambda: prodigy(-1.0), "prodigy: learning_rate must be in [0, inf), got -1"),
    (lambda: prodigy(betas=(1.0, 0.9)), "prodigy: betas[0] must be in [0, 1), got 1"),
    (lambda: prodigy(betas=(0.9, -0.1)), "prodigy: betas[1] must be in [0, 1), got -0.1"),
    (lambda: prodigy(betas=0.9), "prodigy: betas must be a pair (beta1, beta2), got 0.9"),
    (lambda: prodigy(beta3=1.5), "prodigy: beta3 must be in [0, 1), got 1.5"),
    (lambda: prodigy(eps=-1.0), "prodigy: eps must be in [0, inf), got -1"),
    (lambda: prodigy(estim_lr0=0.0), "prodigy: estim_lr0 must be in (0, inf), got 0"),
    (lambda: prodigy(estim_lr_coef=-1.0), "prodigy: estim_lr_coef must be in [0, inf), got -1"),
    (lambda: prodigy(weight_decay=-0.1), "prodigy: weight_decay must be in [0, inf), got -0.1"),
    (lambda: prodigy(state_dtype=jnp.int8), "prodigy: state_dtype must be a floating dtype"),
    (lambda: dadapt_adamw(betas=(0.9, 1.0)), "dadapt_adamw: betas[1] must be in [0, 1), got 1"),
    (lambda: dadapt_adamw(betas=(0.9,)), "dadapt_adamw: betas must be a pair"),
    (lambda: dadapt_adamw(eps=-1.0), "dadapt_adamw: eps must be in [0, inf), got -1"),
    (lambda: dadapt_adamw(estim_lr0=-1.0), "dadapt_adamw: estim_lr0 must be in (0, inf), got -1"),
    (lambda: dadapt_adamw(weight_decay=-1.0), "dadapt_adamw: weight_decay must be in [0, inf)"),
    (lambda: dadapt_adamw(state_dtype="x"), "dadapt_adamw: state_dtype must be a floating dtype"),
    (lambda: dog(-0.1), "dog: learning_rate must be in [0, inf), got -0.1"),
    (lambda: dog(init_step=("size", 1e-6)), "dog: init_step must be a pair (kind, value) with "
                                            "kind one of 'distance', 'learning_rate', 'heuristic'"),
    (lambda: dog(init_step=1e-6), "dog: init_step must be a pair"),
    (lambda: dog(init_step=("distance", 0.0)), "dog: init_step[1] must be in (0, inf), got 0"),
    (lambda: dog(eps=-1.0), "dog: eps must be in [0, inf), got -1"),
    (lambda: dog(weight_decay=-1.0), "dog: weight_decay must be in [0, inf), got -1"),
    (lambda: scale_by_dog(("learning_rate", -1.0)),
     "scale_by_dog: init_step[1] must be in (0, inf), got -1"),
    (lambda: dowg(init_estim_sq_dist=0.0), "dowg: init_estim_sq_dist must be in (0, inf), got 0"),
    (lambda: dowg(eps=0.0), "dowg: eps must be in (0, inf), got 0"),
    (lambda: dowg(init_estim_sq_dist=1.0, eps=-1.0), "dowg: eps must be in [0, inf), got -1"),
    (lambda: cocob(alpha=0.0), "cocob: alpha must be in (0, inf), got 0"),
    (lambda: cocob(eps=0.0), "cocob: eps must be in (0, inf), got 0"),
    (lambda: cocob(-1.0), "cocob: learning_rate must be in [0, inf), got -1"),
    (lambda: cocob(weight_decay=-1.0), "cocob: weight_decay must be in [0, inf), got -1"),
    (lambda: cocob(state_dtype=jnp.int32), "cocob: state_dtype must be a floating dtype"),
    (lambda: scale_by_cocob(alpha=-1.0), "scale_by_cocob: alpha must be in (0, inf), got -1"),
    (lambda: mechanize(gradtx.sgd(1.0), -1.0), "mechanize: weight_decay must be in [0, inf)"),
    (lambda: mechanize(gradtx.sgd(1.0), eps=0.0), "mechanize: eps must be in (0, inf), got 0"),
    (lambda: mechanize(gradtx.sgd(1.0), s_init=0.0), "mechanize: s_init must be in (0, inf)"),
    (lambda: mechanize(gradtx.sgd(1.0), num_betas=0),
     "mechanize: num_betas must be a positive integer, got 0"),
    (lambda: mechanize(gradtx.sgd(1.0), num_betas=2.5),
     "mechanize: num_betas must be a positive integer, got 2.5"),
]  # fmt: skip


@pytest.mark.parametrize("build,message", BAD, ids=[m.split(" must")[0] for _, m in BAD])
def test_bad_hyperparameters_name_the_argument(build, message):
    with pytest.raises(ValueError) as error:
        build()
    assert message in str(error.value)


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_update_needs_the_params(name):
    tx, g = TRANSFORMS[name](), make_params()
    who = "add_decayed_weights" if name == "cocob" else name  # cocob's decay comes first
    with pytest.raises(ValueError, match=rf"{who}: update needs (the )?params"):
        tx.update(g, tx.init(g))


@pytest.mark.parametrize("name", ["prodigy", "dog", "cocob"])
def test_a_tree_mismatch_names_the_path(name):
    tx, params = TRANSFORMS[name](), make_params()
    other = {**params, "head": [params["head"][0], jnp.zeros(4)]}
    with pytest.raises(ValueError, match=r"\['head'\]\[1\]"):
        tx.update(other, tx.init(params), other)


def test_extras_are_accepted_and_ignored_in_a_chain():
    """optax's learners take and drop keyword extras; so do these, inside gradtx.chain."""
    params = make_params()
    for build in (prodigy, dadapt_adamw, dog, dowg, cocob):
        tx = gradtx.chain(gradtx.clip_by_global_norm(1.0), build())
        plain = gradtx.chain(gradtx.clip_by_global_norm(1.0), build())
        u1, _ = tx.update(grads_at(params, 0), tx.init(params), params, value=1.0, batch_size=8)
        u2, _ = plain.update(grads_at(params, 0), plain.init(params), params)
        assert_trees_close(u1, u2)
