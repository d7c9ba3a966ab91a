"""Every learner against its optax namesake: 20 steps on a nested tree, jit and no jit."""

from __future__ import annotations

import chex
import jax.numpy as jnp
import optax
from absl.testing import parameterized
from conftest import assert_trees_close, make_params, run

import gradtx

# (name, gradtx factory, optax factory): both called with the same arguments.
CASES = [
    ("sgd", gradtx.sgd, optax.sgd, dict(learning_rate=0.1)),
    ("sgd_momentum", gradtx.sgd, optax.sgd, dict(learning_rate=0.05, momentum=0.9)),
    ("sgd_nesterov", gradtx.sgd, optax.sgd, dict(learning_rate=0.05, momentum=0.9, nesterov=True)),
    ("adagrad", gradtx.adagrad, optax.adagrad, dict(learning_rate=0.1)),
    ("rmsprop", gradtx.rmsprop, optax.rmsprop, dict(learning_rate=0.01)),
    (
        "rmsprop_centered_momentum",
        gradtx.rmsprop,
        optax.rmsprop,
        dict(learning_rate=0.01, centered=True, momentum=0.9, nesterov=True),
    ),
    (
        "rmsprop_eps_outside",
        gradtx.rmsprop,
        optax.rmsprop,
        dict(learning_rate=0.01, eps_in_sqrt=False, initial_scale=0.1),
    ),
    ("adam", gradtx.adam, optax.adam, dict(learning_rate=0.01)),
    ("adam_eps_root", gradtx.adam, optax.adam, dict(learning_rate=0.01, eps_root=1e-6)),
    ("adamw", gradtx.adamw, optax.adamw, dict(learning_rate=0.01, weight_decay=0.1)),
    ("nadamw", gradtx.adamw, optax.adamw, dict(learning_rate=0.01, nesterov=True)),
    ("amsgrad", gradtx.amsgrad, optax.amsgrad, dict(learning_rate=0.01)),
    ("adamax", gradtx.adamax, optax.adamax, dict(learning_rate=0.01)),
    ("nadam", gradtx.nadam, optax.nadam, dict(learning_rate=0.01)),
    ("adadelta", gradtx.adadelta, optax.adadelta, dict(learning_rate=0.5)),
    ("lion", gradtx.lion, optax.lion, dict(learning_rate=0.003)),
]


def _schedule(count):
    return 0.05 * 0.9 ** count.astype(jnp.float32)


class LearnersMatchOptax(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*[(name, g, o, kw) for name, g, o, kw in CASES])
    def test_matches_optax(self, ours, theirs, kwargs):
        params = make_params()
        expected = run(theirs(**kwargs), params, update=self.variant(theirs(**kwargs).update))
        actual = run(ours(**kwargs), params, update=self.variant(ours(**kwargs).update))
        assert_trees_close(actual, expected)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*[(name, g, o, kw) for name, g, o, kw in CASES])
    def test_learning_rate_schedule_matches_optax(self, ours, theirs, kwargs):
        kwargs = {**kwargs, "learning_rate": _schedule}
        params = make_params(1)
        expected = run(theirs(**kwargs), params, update=self.variant(theirs(**kwargs).update))
        actual = run(ours(**kwargs), params, update=self.variant(ours(**kwargs).update))
        assert_trees_close(actual, expected)
