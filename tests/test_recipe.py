"""gradtx.recipe: blocks declare their per-element rules; chains and wrappers compose them."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradtx
from gradtx import recipe
from gradtx.transforms.adam import SCALE_BY_ADAM
from gradtx.transforms.scaling import SCALE
from gradtx.transforms.weight_decay import ADD_DECAYED_WEIGHTS

PARAMS = {"w": jnp.array([1.0, -2.0]), "b": jnp.array(0.5)}


def stages(tx, params=PARAMS):
    found = recipe.recipe_of(tx)
    assert found is not None
    return found(tx.init(params))


def test_adamw_is_its_blocks_in_order_with_their_scalars():
    tx = gradtx.adamw(0.1, b1=0.8, weight_decay=0.5)
    adam, decay, rate = stages(tx)
    assert (adam.rule, decay.rule, rate.rule) == (SCALE_BY_ADAM, ADD_DECAYED_WEIGHTS, SCALE)
    b1, one_minus_b1, *_, inv1, _, eps, eps_root = adam.values(PARAMS)
    assert (b1, eps, eps_root) == (0.8, 1e-8, 0.0)
    np.testing.assert_allclose([one_minus_b1, inv1], [0.2, 1 / 0.2])  # the first step's
    assert decay.values(PARAMS) == [0.5] and rate.values(PARAMS) == [-0.1]


def test_a_stage_finds_and_puts_its_moments_where_the_learner_keeps_them():
    tx = gradtx.chain(gradtx.clip_by_global_norm(1.0), gradtx.adam(0.1))
    state = tx.init(PARAMS)
    adam = next(s for s in recipe.recipe_of(tx)(state) if s.rule is SCALE_BY_ADAM)
    assert adam.moments[0] is state[1][0].mu and adam.moments[1] is state[1][0].nu
    new_mu, new_nu = ({"w": jnp.full(2, k), "b": jnp.array(k)} for k in (7.0, 9.0))
    put = adam.put(state, (new_mu, new_nu))
    assert put[1][0].mu is new_mu and put[1][0].nu is new_nu
    assert put[0] is state[0] and put[1][1] is state[1][1] and put[1][0].count is state[1][0].count


def test_scheduled_hyperparameters_are_read_at_the_states_count():
    schedule = gradtx.schedules.linear(1.0, 0.0, 10)
    tx = gradtx.sgd(schedule, momentum=gradtx.schedules.linear(0.5, 0.9, 10), weight_decay=schedule)
    state = tx.init(PARAMS)
    for _ in range(4):
        _, state = tx.update(PARAMS, state, PARAMS)
    decay, trace, rate = recipe.recipe_of(tx)(state)
    np.testing.assert_allclose(decay.values(PARAMS), [0.6])
    np.testing.assert_allclose(trace.values(PARAMS), [0.66, 0.34])
    np.testing.assert_allclose(rate.values(PARAMS), [-0.6])
    assert trace.options == {"nesterov": False, "unit_gain": False}


def test_injected_hyperparameters_come_from_the_state():
    tx = gradtx.inject_hyperparams(gradtx.adam)(learning_rate=0.1)
    state = gradtx.set_hyperparams(tx.init(PARAMS), learning_rate=0.25)
    *_, rate = recipe.recipe_of(tx)(state)
    np.testing.assert_allclose(rate.values(PARAMS), [-0.25])
    adam = next(s for s in recipe.recipe_of(tx)(state) if s.rule is SCALE_BY_ADAM)
    assert adam.moments[0] is state.inner_state[0].mu
    assert adam.put(state, adam.moments).inner_state[0].mu is state.inner_state[0].mu


def test_clip_reads_its_scale_from_the_gradients():
    (clip,) = stages(gradtx.clip_by_global_norm(1.0))
    np.testing.assert_allclose(clip.values({"a": jnp.array([3.0, 4.0])}), [0.2])
    np.testing.assert_allclose(clip.values({"a": jnp.array([0.3, 0.4])}), [1.0])


@pytest.mark.parametrize(
    "make",
    [
        lambda: gradtx.masked(gradtx.adam(0.1), {"w": True, "b": False}),
        lambda: gradtx.apply_if_finite(gradtx.adam(0.1), 2),
        lambda: gradtx.adadelta(0.1),
        lambda: gradtx.chain(gradtx.adam(0.1), optax.scale(2.0)),  # one member without
        lambda: optax.adam(0.1),
        lambda: gradtx.stateless(lambda g, p: g),
    ],
)
def test_what_declares_no_rule_has_no_recipe(make):
    assert recipe.recipe_of(make()) is None


def test_a_rule_is_defined_once():
    assert recipe.rule("scale", scalars=("factor",)) is not None  # the same again is fine
    with pytest.raises(ValueError, match="a different rule named 'scale' exists"):
        recipe.rule("scale", scalars=("factor", "other"))


def test_declarations_must_fit_their_rule():
    with pytest.raises(ValueError, match="trace takes options"):
        recipe.declare(gradtx.identity(), gradtx.transforms.averages.TRACE, nesterov=True)
    (stage,) = stages(recipe.declare(gradtx.identity(), SCALE, lambda s, u: {"scale": 2.0}))
    with pytest.raises(ValueError, match=r"scale declares scalars \['scale'\]; its rule has"):
        stage.values(PARAMS)


def test_a_composite_rule_lays_out_both_parts_and_refuses_shared_names():
    from gradtx.transforms.optimistic import OPTIMISTIC_ADAM, SCALE_BY_OPTIMISTIC_GRADIENT

    assert recipe.composed(SCALE_BY_ADAM, SCALE_BY_OPTIMISTIC_GRADIENT) is OPTIMISTIC_ADAM
    assert recipe.composed(SCALE_BY_OPTIMISTIC_GRADIENT, SCALE_BY_ADAM) is None
    assert OPTIMISTIC_ADAM.scalars == SCALE_BY_ADAM.scalars + SCALE_BY_OPTIMISTIC_GRADIENT.scalars
    assert OPTIMISTIC_ADAM.moments == ("mu", "nu", "previous_gradient")
    with pytest.raises(ValueError, match=r"scale_by_adam and scale_by_adam both have scalars"):
        recipe.composite("adam_twice", SCALE_BY_ADAM, SCALE_BY_ADAM, kernel="gradtx_none")
