"""gradtx.labels: labels and masks spread over params, and the hook containers answer through."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

import gradtx
from gradtx import labels

PARAMS = {"encoder": {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}, "head": jnp.ones(3)}


def test_a_prefix_labels_every_leaf_below_it():
    spread = labels.labels_for("partition", {"encoder": "slow", "head": "fast"}, PARAMS)
    assert spread == {"encoder": {"w": "slow", "b": "slow"}, "head": "fast"}


def test_a_function_of_the_params_is_called_on_them():
    by_rank = labels.labels_for("masked", lambda p: jax.tree.map(lambda x: x.ndim > 1, p), PARAMS)
    assert by_rank == {"encoder": {"w": True, "b": False}, "head": False}


def test_labels_that_fit_nothing_name_the_path():
    with pytest.raises(gradtx.TreeMismatchError, match=r"partition: .*\['head'\]"):
        labels.labels_for("partition", {"encoder": "slow"}, PARAMS)


def test_a_packed_tree_answers_for_its_buffers():
    packed = gradtx.pack(PARAMS, groups={"encoder": "slow", "head": "fast"})
    per_buffer = labels.labels_for("partition", {"encoder": "slow", "head": "fast"}, packed)
    assert per_buffer.buffers == {"slow/float32": "slow", "fast/float32": "fast"}
    with pytest.raises(ValueError, match="partition: buffer 'float32' of the packed params"):
        labels.labels_for("partition", {"encoder": "slow", "head": "fast"}, gradtx.pack(PARAMS))


class _Pair:
    """A container of two params trees, labelled as one tree of both."""

    def __init__(self, left, right):
        self.left, self.right = left, right


jax.tree_util.register_pytree_node(
    _Pair, lambda p: ((p.left, p.right), None), lambda _, children: _Pair(*children)
)


def test_any_container_can_register_how_its_leaves_are_labelled():
    labels.register_container(
        _Pair,
        lambda pair: {"left": pair.left, "right": pair.right},
        lambda pair, tree, who: _Pair(tree["left"], tree["right"]),
    )
    pair = _Pair(jnp.ones(2), jnp.ones(3))
    found = labels.labels_for("masked", lambda p: {"left": True, "right": False}, pair)
    assert (found.left, found.right) == (True, False)
    masked = gradtx.masked(gradtx.scale(-1.0), lambda p: {"left": True, "right": False})
    updates, _ = masked.update(pair, masked.init(pair), pair)
    assert (updates.left == -1.0).all() and (updates.right == 1.0).all()
