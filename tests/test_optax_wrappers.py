"""optax's wrappers and combinators under their optax names: optax's signatures, states, numbers."""

from __future__ import annotations

import inspect

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized
from conftest import assert_trees_close, grads_at, make_params

import gradtx

STEPS = 50


def _trajectories(ours, theirs, update_ours, params=None, grads=grads_at):
    """Both driven for STEPS steps by gradients of their own params; (ours, theirs) per step."""
    params = make_params() if params is None else params
    s_ours, s_theirs, p_ours, p_theirs, out = (
        ours.init(params),
        theirs.init(params),
        params,
        params,
        [],
    )
    update_theirs = jax.jit(theirs.update)  # the oracle jitted: eager lax.cond compiles each call
    for t in range(STEPS):
        u_ours, s_ours = update_ours(grads(p_ours, t), s_ours, p_ours)
        u_theirs, s_theirs = update_theirs(grads(p_theirs, t), s_theirs, p_theirs)
        chex.assert_trees_all_equal_dtypes(u_ours, u_theirs)
        assert_trees_close(u_ours, u_theirs, rtol=1e-6, atol=1e-7)
        p_ours, p_theirs = (
            gradtx.apply_updates(p_ours, u_ours),
            optax.apply_updates(p_theirs, u_theirs),
        )
        out.append((s_ours, s_theirs))
    assert_trees_close(p_ours, p_theirs, rtol=1e-6, atol=1e-6)
    return out


NOT_FINITE = [t for t in range(STEPS) if t % 7 in (3, 4) or t in (30, 33)]  # 30-33: four in a row


def _with_nans(params, t):
    g = grads_at(params, t)
    if t in NOT_FINITE:
        g["head"][1] = g["head"][1].at[0].set(jnp.inf if t % 2 else jnp.nan)
    return g


# optax's signatures, keyword for keyword: gradtx's own options come after, keyword-only.
SAME_SIGNATURE = [
    "apply_every", "apply_if_finite", "conditionally_mask", "conditionally_transform", "freeze",
    "lookahead", "measure_with_ema", "monitor", "named_chain", "selective_transform",
    "set_to_zero", "skip_large_updates", "skip_not_finite", "snapshot", "stateless",
    "stateless_with_tree_map", "with_extra_args_support",
]  # fmt: skip


@pytest.mark.parametrize("name", SAME_SIGNATURE + ["MultiSteps"])
def test_optaxs_arguments_come_first_with_optaxs_names_and_defaults(name):
    def described(parameters):  # a *args' name is not part of the calling convention
        return [
            (p.kind, p.default, None if p.kind is p.VAR_POSITIONAL else p.name) for p in parameters
        ]

    ours = list(inspect.signature(getattr(gradtx, name)).parameters.values())
    theirs = list(inspect.signature(getattr(optax, name)).parameters.values())
    assert described(ours[: len(theirs)]) == described(theirs)
    assert all(p.kind is p.KEYWORD_ONLY for p in ours[len(theirs) :])


@pytest.mark.parametrize(
    "name",
    [
        "ApplyEvery", "ApplyIfFiniteState", "ConditionallyMaskState",
        "ConditionallyTransformState", "LookaheadParams", "LookaheadState", "MonitorState",
        "MultiStepsState", "SnapshotState",
    ],
)  # fmt: skip
def test_states_have_optaxs_fields(name):
    assert getattr(gradtx, name)._fields == getattr(optax, name)._fields


class OptaxWrappersTest(chex.TestCase, parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("k1", 1), ("k3", 3), ("k4", 4))
    def test_apply_every(self, k):
        ours = gradtx.chain(gradtx.apply_every(k), gradtx.scale(-0.1))
        theirs = optax.chain(optax.apply_every(k), optax.scale(-0.1))
        for s_ours, s_theirs in _trajectories(ours, theirs, self.variant(ours.update)):
            assert int(s_ours[0].count) == int(s_theirs[0].count)
            assert_trees_close(s_ours[0].grad_acc, s_theirs[0].grad_acc)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("none_skipped", 0), ("two_skipped", 2), ("ten", 10))
    def test_apply_if_finite(self, max_consecutive_errors):
        ours = gradtx.apply_if_finite(optax.adam(1e-2), max_consecutive_errors)
        theirs = optax.apply_if_finite(optax.adam(1e-2), max_consecutive_errors)
        update, update_theirs = self.variant(ours.update), jax.jit(theirs.update)
        s_ours, s_theirs = ours.init(make_params()), theirs.init(make_params())
        p = make_params()
        for t in range(STEPS):
            g = _with_nans(p, t)
            u_ours, s_ours = update(g, s_ours, p)
            u_theirs, s_theirs = update_theirs(g, s_theirs, p)
            # Once given up, both apply the NaN; compare where finite and NaN where not.
            jax.tree.map(
                lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
                u_ours,
                u_theirs,
            )
            for field in ("notfinite_count", "last_finite", "total_notfinite"):
                assert int(getattr(s_ours, field)) == int(getattr(s_theirs, field)), (t, field)
            assert_trees_close(s_ours.inner_state, s_theirs.inner_state)
            if all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(u_ours)):
                p = gradtx.apply_updates(p, u_ours)
        assert int(s_ours.total_notfinite) == len(NOT_FINITE)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        ("transform", "conditionally_transform"), ("mask", "conditionally_mask")
    )
    def test_conditionally(self, name):
        def every_third(step):
            return step % 3 == 1

        ours = gradtx.chain(getattr(gradtx, name)(optax.adam(1e-2), every_third), gradtx.scale(0.5))
        theirs = optax.chain(getattr(optax, name)(optax.adam(1e-2), every_third), optax.scale(0.5))
        for s_ours, s_theirs in _trajectories(ours, theirs, self.variant(ours.update)):
            assert int(s_ours[0].step) == int(s_theirs[0].step)
            assert_trees_close(s_ours[0].inner_state, s_theirs[0].inner_state, rtol=1e-6, atol=1e-7)

    @chex.variants(with_jit=True, without_jit=True)
    def test_conditionally_forwards_extras_when_asked(self):
        def when_low(step, value):
            return value < 1.0

        ours = gradtx.conditionally_mask(gradtx.scale(2.0), when_low, forward_extra_args=True)
        theirs = optax.conditionally_mask(optax.scale(2.0), when_low, forward_extra_args=True)
        update = self.variant(lambda g, s, v: ours.update(g, s, None, value=v))
        s_ours, s_theirs = ours.init(None), theirs.init(None)
        for v in (0.5, 2.0, 0.1):
            u_ours, s_ours = update(jnp.ones(2), s_ours, v)
            u_theirs, s_theirs = theirs.update(jnp.ones(2), s_theirs, None, value=v)
            np.testing.assert_array_equal(u_ours, u_theirs)
        assert int(s_ours.step) == 3

    @chex.variants(with_jit=True, without_jit=True)
    def test_named_chain(self):
        ours = gradtx.named_chain(
            ("clip", optax.clip_by_global_norm(1.0)), ("adam", gradtx.adam(1e-2))
        )
        theirs = optax.named_chain(
            ("clip", optax.clip_by_global_norm(1.0)), ("adam", optax.adam(1e-2))
        )
        for s_ours, s_theirs in _trajectories(ours, theirs, self.variant(ours.update)):
            assert type(s_ours) is type(s_theirs) and list(s_ours) == list(s_theirs) == [
                "clip",
                "adam",
            ]
        with pytest.raises(ValueError, match="named_chain: names must be unique, got 'a' twice"):
            gradtx.named_chain(("a", gradtx.identity()), ("a", gradtx.identity()))
        with pytest.raises(ValueError, match="named_chain: argument 0 must be a"):
            gradtx.named_chain(gradtx.identity())

    def test_named_chain_hands_extras_to_members_that_take_them(self):
        # optax.polyak_sgd reads the loss from the `value` extra; optax.scale takes none.
        ours = gradtx.named_chain(("scale", optax.scale(0.1)), ("sgd", optax.polyak_sgd()))
        theirs = optax.named_chain(("scale", optax.scale(0.1)), ("sgd", optax.polyak_sgd()))
        u_ours, _ = ours.update(jnp.array(0.7), ours.init(0.5), 0.7, value=1.0)
        u_theirs, _ = theirs.update(jnp.array(0.7), theirs.init(0.5), 0.7, value=1.0)
        np.testing.assert_allclose(u_ours, u_theirs, rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        ("tree", {"dense": True, "conv": False, "head": [False, True]}),
        ("all", True),
        ("none", False),
    )
    def test_freeze_and_selective_transform(self, mask):
        for ours, theirs in (
            (
                gradtx.chain(gradtx.freeze(mask), gradtx.adam(1e-2)),
                optax.chain(optax.freeze(mask), optax.adam(1e-2)),
            ),
            (
                gradtx.selective_transform(gradtx.adam(1e-2), freeze_mask=mask),
                optax.selective_transform(optax.adam(1e-2), freeze_mask=mask),
            ),
        ):
            _trajectories(ours, theirs, self.variant(ours.update))

    def test_selective_transform_rejects_a_function_for_a_mask(self):
        # optax takes the function for one truthy leaf and freezes everything.
        with pytest.raises(ValueError, match="selective_transform: freeze_mask must be a bool"):
            gradtx.selective_transform(gradtx.sgd(0.1), freeze_mask=lambda p: p)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("plain", False), ("reset", True))
    def test_lookahead(self, reset_state):
        ours = gradtx.lookahead(gradtx.adam(1e-2), 5, 0.5, reset_state)
        theirs = optax.lookahead(optax.adam(1e-2), 5, 0.5, reset_state)
        update = self.variant(ours.update)
        p_ours = gradtx.LookaheadParams.init_synced(make_params())
        p_theirs = optax.LookaheadParams.init_synced(make_params())
        s_ours, s_theirs = ours.init(p_ours), theirs.init(p_theirs)
        for t in range(STEPS):
            u_ours, s_ours = update(grads_at(p_ours.fast, t), s_ours, p_ours)
            assert isinstance(u_ours, gradtx.LookaheadParams)
            u_theirs, s_theirs = theirs.update(grads_at(p_theirs.fast, t), s_theirs, p_theirs)
            # At a sync the updates are differences of O(1) params: an ulp of 1 is 1.2e-7.
            assert_trees_close(tuple(u_ours), tuple(u_theirs), rtol=1e-6, atol=1e-6)
            assert int(s_ours.steps_since_sync) == int(s_theirs.steps_since_sync)
            assert_trees_close(
                jax.tree.leaves(s_ours.fast_state), jax.tree.leaves(s_theirs.fast_state)
            )
            p_ours = gradtx.apply_updates(p_ours, u_ours)
            p_theirs = optax.apply_updates(p_theirs, u_theirs)
        assert_trees_close(tuple(p_ours), tuple(p_theirs), rtol=1e-6, atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_lookahead_with_slow_weights_takes_the_same_steps(self):
        pair = gradtx.lookahead(gradtx.sgd(0.1), 3, 0.5)
        plain = gradtx.lookahead_with_slow_weights(gradtx.sgd(0.1), 3, 0.5)
        update = self.variant(plain.update)
        params = make_params()
        p_pair, p_plain = gradtx.LookaheadParams.init_synced(params), params
        s_pair, s_plain = pair.init(p_pair), plain.init(p_plain)
        for t in range(12):
            u, s_pair = pair.update(grads_at(p_pair.fast, t), s_pair, p_pair)
            p_pair = gradtx.apply_updates(p_pair, u)
            u, s_plain = update(grads_at(p_plain, t), s_plain, p_plain)
            p_plain = gradtx.apply_updates(p_plain, u)
            assert_trees_close(p_plain, p_pair.fast, rtol=1e-5, atol=1e-6)
            assert_trees_close(s_plain.slow, p_pair.slow, rtol=1e-5, atol=1e-6)

    def test_lookahead_needs_lookahead_params(self):
        opt = gradtx.lookahead(gradtx.sgd(0.1), 2, 0.5)
        params = make_params()
        state = opt.init(params)  # optax's init takes the fast params alone
        with pytest.raises(ValueError, match=r"lookahead: update needs the params as gradtx.Look"):
            opt.update(grads_at(params, 0), state, params)

    @chex.variants(with_jit=True, without_jit=True)
    def test_monitor_snapshot_and_measure_with_ema(self):
        def measures(module):
            return module.monitor(
                {
                    "norm": optax.tree.norm,
                    "clipped_ema": module.measure_with_ema(
                        lambda u: optax.tree.norm(u) > 2.0, decay=0.9
                    ),
                    "max_ema": module.measure_with_ema(
                        lambda u: jnp.max(u["dense"][0]), decay=0.8, debias=False
                    ),
                }
            )

        ours = gradtx.chain(
            gradtx.sgd(0.1, momentum=0.9),
            measures(gradtx),
            gradtx.snapshot("max", lambda u: jnp.max(u["head"][1])),
            gradtx.clip_by_global_norm(0.3),
        )
        theirs = optax.chain(
            optax.sgd(0.1, momentum=0.9),
            measures(optax),
            optax.snapshot("max", lambda u: jnp.max(u["head"][1])),
            optax.clip_by_global_norm(0.3),
        )
        clipped = []
        for s_ours, s_theirs in _trajectories(ours, theirs, self.variant(ours.update)):
            for name in ("norm", "clipped_ema", "max_ema"):
                np.testing.assert_allclose(
                    s_ours[1].measurements[name], s_theirs[1].measurements[name], rtol=1e-6
                )
            np.testing.assert_allclose(
                s_ours[2].measurement["max"], s_theirs[2].measurement["max"], rtol=1e-6
            )
            assert_trees_close(
                jax.tree.leaves(s_ours[1].measure_states),
                jax.tree.leaves(s_theirs[1].measure_states),
                rtol=1e-6,
            )
            clipped.append(float(s_ours[1].measurements["clipped_ema"]))
        assert 0.0 < min(clipped[10:]) and max(clipped) < 1.0  # some steps clipped, not all

    def test_monitors_state_keeps_its_structure_and_dtypes_from_init(self):
        opt = gradtx.monitor(
            {"big": lambda u: optax.tree.norm(u) > 1.0,
             "big_ema": gradtx.measure_with_ema(lambda u: optax.tree.norm(u) > 1.0, 0.9)}
        )  # fmt: skip
        params = make_params()
        state = opt.init(params)
        _, new = opt.update(grads_at(params, 0), state, params)
        chex.assert_trees_all_equal_structs(state, new)
        chex.assert_trees_all_equal_shapes_and_dtypes(state, new)
        assert new.measurements["big_ema"].dtype == jnp.float32

    @parameterized.named_parameters(
        ("float32", jnp.float32, 1e-6), ("bfloat16", jnp.bfloat16, 2**-5)
    )
    def test_measure_with_ema_accumulator_dtype(self, dtype, rtol):
        # bfloat16: optax multiplies the stored average by the decay in bfloat16, gradtx
        # widens it first (as every gradtx moment), so the two round differently: a few
        # bfloat16 ulps (2**-8) apart after 50 steps.
        ours = gradtx.measure_with_ema(jnp.mean, 0.9, accumulator_dtype=dtype)
        theirs = optax.measure_with_ema(jnp.mean, 0.9, accumulator_dtype=dtype)
        s_ours, s_theirs = ours.init(jnp.zeros(3)), theirs.init(jnp.zeros(3))
        for t in range(STEPS):
            g = jnp.full(3, 1.0 + 0.1 * np.sin(t))
            m_ours, s_ours = ours.update(g, s_ours)
            m_theirs, s_theirs = theirs.update(g, s_theirs)
            np.testing.assert_allclose(m_ours, m_theirs, rtol=rtol)
            assert s_ours[1].ema.dtype == s_theirs[1].ema.dtype == dtype
            np.testing.assert_allclose(
                np.float32(s_ours[1].ema), np.float32(s_theirs[1].ema), rtol=rtol
            )


class StatelessAndExtrasTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_stateless_and_stateless_with_tree_map_take_optaxs_functions(self):
        def weight_decay(updates, params):
            return jax.tree.map(lambda g, p: -0.1 * (g + 0.1 * p), updates, params)

        per_leaf = lambda g, p: -0.1 * (g + 0.1 * p)  # noqa: E731
        for ours, theirs in (
            (gradtx.stateless(weight_decay), optax.stateless(weight_decay)),
            (gradtx.stateless_with_tree_map(per_leaf), optax.stateless_with_tree_map(per_leaf)),
        ):
            _trajectories(ours, theirs, self.variant(ours.update))
        without_params = gradtx.stateless_with_tree_map(lambda g, p: 2 * g if p is None else g)
        u, _ = without_params.update({"w": jnp.ones(2)}, without_params.init(None))
        np.testing.assert_array_equal(u["w"], 2.0)

    def test_with_extra_args_support(self):
        marked = gradtx.with_extra_args_support(optax.scale(2.0))
        assert isinstance(marked, gradtx.GradientTransformationExtraArgs)
        assert gradtx.with_extra_args_support(marked) is marked
        u, _ = marked.update(jnp.ones(2), marked.init(None), None, value=1.0, batch_size=8)
        np.testing.assert_array_equal(u, 2.0)
        # A gradtx block taking an extra still gets it.
        scaled = gradtx.with_extra_args_support(
            gradtx.stateless(lambda g, p, *, batch_size: g / batch_size)
        )
        u, _ = scaled.update(jnp.ones(2), scaled.init(None), None, value=1.0, batch_size=8)
        np.testing.assert_array_equal(u, 0.125)
        # optax's combinators recognise the marker class.
        wrapped = optax.chain(marked)
        u, _ = wrapped.update(jnp.ones(2), wrapped.init(None), None, value=1.0)
        np.testing.assert_array_equal(u, 2.0)


@pytest.mark.parametrize(
    "make",
    [
        lambda m: m.set_to_zero(),
        lambda m: m.scale(0.1),
        lambda m: m.identity(),
        lambda m: m.stateless(lambda u, p: u),
        lambda m: m.stateless_with_tree_map(lambda u, p: 2 * u),
        lambda m: m.clip_by_global_norm(1.0),
    ],
    ids=["set_to_zero", "scale", "identity", "stateless", "stateless_with_tree_map", "clip"],
)
def test_stateless_transforms_take_none_as_optaxs_do(make):
    ours, theirs = make(gradtx), make(optax)
    u_ours, _ = ours.update(None, ours.init(None))
    u_theirs, _ = theirs.update(None, theirs.init(None))
    assert u_ours is None and u_theirs is None
    tree = {"w": jnp.ones(2), "frozen": None}
    u_ours, _ = ours.update(tree, ours.init(tree), tree)
    u_theirs, _ = theirs.update(tree, theirs.init(tree), tree)
    assert u_ours["frozen"] is None
    assert_trees_close(u_ours, u_theirs)


def test_set_to_zero_is_optaxs_and_freeze_takes_the_mask():
    params = make_params()
    zero = gradtx.set_to_zero()
    u, state = zero.update(grads_at(params, 0), zero.init(params))
    chex.assert_trees_all_equal(u, jax.tree.map(jnp.zeros_like, params))
    assert state == gradtx.EmptyState() == optax.set_to_zero().init(params)
    frozen = gradtx.freeze(lambda p: {"dense": True, "conv": False, "head": True})
    u, _ = frozen.update(grads_at(params, 0), frozen.init(params), params)
    np.testing.assert_array_equal(u["conv"][0], grads_at(params, 0)["conv"][0])
    assert not any(bool(jnp.any(x)) for x in jax.tree.leaves((u["dense"], u["head"])))
    with pytest.raises(TypeError):
        gradtx.freeze()  # optax's freeze takes the mask; set_to_zero is the zero transform


def test_named_chain_state_keeps_its_type_through_set_hyperparams():
    opt = gradtx.named_chain(
        ("clip", gradtx.clip_by_global_norm(1.0)),
        ("sgd", gradtx.inject_hyperparams(gradtx.sgd)(learning_rate=0.1)),
    )
    state = opt.init({"w": jnp.ones(2)})
    changed = gradtx.set_hyperparams(state, learning_rate=0.5)
    assert jax.tree.structure(changed) == jax.tree.structure(state)  # still an OrderedDict
    np.testing.assert_allclose(gradtx.get_hyperparams(changed)["learning_rate"], 0.5)
