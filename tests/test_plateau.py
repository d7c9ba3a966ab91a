"""reduce_on_plateau under both rules: torch's, against a plain loop written from torch's
documented ReduceLROnPlateau algorithm, and optax's, against optax.contrib.reduce_on_plateau
itself, scale by scale."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gradtx import schedules as S

INT32_MAX = int(np.iinfo(np.int32).max)


def plateau_losses() -> np.ndarray:
    """Descents, exact ties, noisy plateaus and sub-threshold creeps, then a late drop."""
    rng = np.random.default_rng(0)
    return np.concatenate([
        np.linspace(1.0, 0.6, 20),  # improving
        np.full(12, 0.6),  # ties are not improvements
        0.6 + 0.002 * rng.random(15),  # noise above the best
        np.linspace(0.6, 0.4, 10),
        0.4 * (1 - 5e-4) ** np.arange(1, 16),  # below a relative or absolute 1e-3
        np.full(20, 0.4 * (1 - 5e-4) ** 15),
        [0.1],
        0.1 + 0.01 * rng.random(25),
    ]).astype(np.float32)  # fmt: skip


LOSSES = plateau_losses()


def torch_reduce_lr_on_plateau(
    losses, factor, patience, threshold, threshold_mode, cooldown, min_lr, eps=1e-8
):
    """torch.optim.lr_scheduler.ReduceLROnPlateau(mode="min").step(loss) per loss, on a
    learning rate of 1, as its documentation and source describe it:

        if is_better(current, best): best, num_bad_epochs = current, 0
        else: num_bad_epochs += 1
        if cooldown_counter > 0: cooldown_counter -= 1; num_bad_epochs = 0
        if num_bad_epochs > patience:
            new_lr = max(lr * factor, min_lr); lr = new_lr if lr - new_lr > eps else lr
            cooldown_counter = cooldown; num_bad_epochs = 0

    with is_better = a < best * (1 - threshold) ("rel") or a < best - threshold ("abs"),
    evaluated in float32 as gradtx stores the best value.
    """
    f32 = np.float32
    best, num_bad, cooldown_counter, lr, out = f32(np.inf), 0, 0, 1.0, []
    for current in losses:
        current = f32(current)
        if threshold_mode == "rel":
            better = current < best * f32(1 - threshold)
        else:
            better = current < best - f32(threshold)
        if better:
            best, num_bad = current, 0
        else:
            num_bad += 1
        if cooldown_counter > 0:
            cooldown_counter -= 1
            num_bad = 0
        if num_bad > patience:
            new_lr = max(lr * factor, min_lr)
            if lr - new_lr > eps:
                lr = new_lr
            cooldown_counter = cooldown
            num_bad = 0
        out.append(lr)
    return np.asarray(out)


def scales(tx, losses=LOSSES) -> np.ndarray:
    """The scale after each update, one compiled scan over the losses (gradtx or optax)."""
    params = {"w": jnp.ones(2, jnp.float32)}

    @jax.jit
    def run(values):
        def step(state, value):
            _, state = tx.update(params, state, params, value=value)
            return state, state.scale

        return jax.lax.scan(step, tx.init(params), values)[1]

    return np.asarray(run(jnp.asarray(losses)))


CONFIGS = list(itertools.product([0, 1, 3], [0, 2], [0.5, 0.8], ["rel", "abs"]))


@pytest.mark.parametrize("patience, cooldown, factor, mode", CONFIGS)
def test_optax_rule_is_optax_reduce_on_plateau(patience, cooldown, factor, mode):
    rtol, atol = (1e-3, 0.0) if mode == "rel" else (0.0, 1e-3)
    theirs = optax.contrib.reduce_on_plateau(
        factor=factor, patience=patience, rtol=rtol, atol=atol, cooldown=cooldown, min_scale=1e-3
    )
    ours = S.reduce_on_plateau(factor, patience, 1e-3, mode, cooldown, 1e-3, rule="optax")
    expected = scales(theirs)
    assert len(set(expected.tolist())) > 2  # the sequence reduces more than once
    np.testing.assert_array_equal(scales(ours), expected)


@pytest.mark.parametrize("patience, cooldown, factor, mode", CONFIGS)
def test_torch_rule_is_torch_reduce_lr_on_plateau(patience, cooldown, factor, mode):
    ours = S.reduce_on_plateau(factor, patience, 1e-3, mode, cooldown, 1e-3, rule="torch")
    expected = torch_reduce_lr_on_plateau(LOSSES, factor, patience, 1e-3, mode, cooldown, 1e-3)
    assert len(set(expected.tolist())) > 2
    np.testing.assert_allclose(scales(ours), expected, rtol=1e-6)


@pytest.mark.parametrize("patience, cooldown, factor, mode", CONFIGS)
def test_the_rules_differ_by_one_update_of_patience(patience, cooldown, factor, mode):
    """optax's n == p is torch's n > p - 1 for p >= 1; with p = 0 optax reduces after
    improvements instead (its plateau count is 0 there)."""
    optax_rule = scales(S.reduce_on_plateau(factor, patience, 1e-3, mode, cooldown, rule="optax"))
    torch_rule = scales(S.reduce_on_plateau(factor, patience, 1e-3, mode, cooldown))
    assert not np.array_equal(optax_rule, torch_rule)
    if patience >= 1:
        earlier = S.reduce_on_plateau(factor, patience - 1, 1e-3, mode, cooldown)
        np.testing.assert_array_equal(optax_rule, scales(earlier))


def test_defaults_are_torchs_rule_and_optaxs_defaults_match_optax():
    default = scales(S.reduce_on_plateau())
    np.testing.assert_array_equal(default, scales(S.reduce_on_plateau(rule="torch")))
    expected = torch_reduce_lr_on_plateau(LOSSES, 0.1, 10, 1e-4, "rel", 0, 0.0)
    np.testing.assert_allclose(default, expected, rtol=1e-6)
    np.testing.assert_array_equal(
        scales(S.reduce_on_plateau(rule="optax")), scales(optax.contrib.reduce_on_plateau())
    )


def test_optax_rule_keeps_min_scale_at_every_update_as_optax():
    # A min_scale above 1 lifts optax's scale at the first update outside a cool-down.
    theirs = optax.contrib.reduce_on_plateau(factor=0.5, patience=3, cooldown=2, min_scale=2.0)
    ours = S.reduce_on_plateau(0.5, 3, 1e-4, "rel", 2, 2.0, rule="optax")
    np.testing.assert_array_equal(scales(ours), scales(theirs))


def test_optax_rule_plateau_count_saturates_instead_of_wrapping():
    tx = S.reduce_on_plateau(patience=0, rule="optax")
    state = tx.init(None)._replace(best=jnp.float32(0.0), bad_steps=jnp.int32(INT32_MAX))
    _, state = tx.update({"w": jnp.ones(2)}, state, value=1.0)
    assert int(state.bad_steps) == INT32_MAX and float(state.scale) == 1.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"rule": "keras"},
            "reduce_on_plateau: rule must be one of ('torch', 'optax'), got 'keras'",
        ),
        ({"patience": 10**10}, "reduce_on_plateau: patience must be <= 2147483647"),
        ({"cooldown": 2**31}, "reduce_on_plateau: cooldown must be <= 2147483647"),
    ],
)
def test_bad_options_name_the_argument(kwargs, message):
    with pytest.raises(ValueError) as info:
        S.reduce_on_plateau(**kwargs)
    assert str(info.value).startswith(message)


def test_rule_is_keyword_only():
    with pytest.raises(TypeError):
        S.reduce_on_plateau(0.1, 10, 1e-4, "rel", 0, 0.0, "optax")
