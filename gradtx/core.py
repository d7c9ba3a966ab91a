"""The protocol: a gradient transformation is a pure ``(init, update)`` pair.

``update(updates, state, params=None, **extra) -> (new_updates, new_state)``.
``extra`` carries per-step keyword values (``batch_size``, ``value``, ...);
:func:`chain` hands each member only the extras its ``update`` accepts, so
optax transforms, which take no extras, compose with gradtx ones both ways.
"""

from __future__ import annotations

import collections
import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import recipe
from gradtx.checks import check_trees_match

Params = Any
Updates = Any
State = Any
Schedule = Callable[[jax.Array], jax.Array]
Scalar = float | jax.Array  # a number, an array or a tracer
ScalarOrSchedule = float | jax.Array | Schedule


class GradientTransformation(NamedTuple):
    """A pure ``(init, update)`` pair, structurally identical to ``optax.GradientTransformation``.

    Attributes:
      init: ``init(params) -> state``.
      update: ``update(updates, state, params=None, **extra) -> (updates, state)``.

    Examples:
      >>> import jax, jax.numpy as jnp, gradtx
      >>> double = gradtx.GradientTransformation(
      ...     lambda params: gradtx.EmptyState(),
      ...     lambda updates, state, params=None: (jax.tree.map(lambda g: 2 * g, updates), state))
      >>> updates, state = double.update({"w": jnp.ones(2)}, double.init(None))
      >>> print(updates["w"])
      [2. 2.]

    References:
      optax: ``optax.GradientTransformation``.
    """

    init: Callable[[Params], State]
    update: Callable[..., tuple[Updates, State]]


class GradientTransformationExtraArgs(GradientTransformation):
    """A transform whose ``update`` takes keyword extras: optax's marker class.

    Every gradtx transform already takes extras (the combinators hand each
    member only those it accepts), so this class only marks a transform for
    code that checks ``isinstance(tx, GradientTransformationExtraArgs)``, as
    optax's combinators do; :func:`with_extra_args_support` returns one.

    Attributes:
      init: ``init(params) -> state``.
      update: ``update(updates, state, params=None, **extra) -> (updates, state)``.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> tx = gradtx.GradientTransformationExtraArgs(
      ...     lambda params: gradtx.EmptyState(),
      ...     lambda updates, state, params=None, *, scale=1.0: (scale * updates, state))
      >>> print(tx.update(jnp.ones(2), tx.init(None), scale=3.0)[0])
      [3. 3.]

    References:
      optax: ``optax.GradientTransformationExtraArgs``.
    """


IDENTITY = recipe.rule("identity")


class EmptyState(NamedTuple):
    """The state of a transform that keeps none."""


def init_empty_state(params: Params) -> EmptyState:
    """The ``init`` of a stateless transform.

    Args:
      params: ignored.
    """
    del params
    return EmptyState()


def identity() -> GradientTransformation:
    """Pass updates through unchanged: :math:`u \\leftarrow g`.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> opt = gradtx.identity()
      >>> updates, state = opt.update({"w": jnp.array([1.0, -2.0])}, opt.init(None))
      >>> print(updates["w"])
      [ 1. -2.]

    References:
      optax: ``optax.identity``.
    """

    def update(updates, state, params=None, **extra):
        return updates, state

    return recipe.declare(GradientTransformation(init_empty_state, update), IDENTITY)


def extras_filter(fn: Callable, slots: int = 3) -> Callable[[dict], dict]:
    """Return a function that keeps only the extras ``fn`` can take as keywords.

    Every combinator and wrapper hands its members their extras through this
    one rule: an ``update`` that takes ``**extra`` gets them all, one with named
    keyword parameters gets those, and one with neither (an optax transform)
    gets none.

    Args:
      fn: an ``update`` function (or any callable taking extras as keywords).
      slots: leading positional parameters that are never extras
        (``updates, state, params``).
    """
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # builtins and some C callables have no signature
        return lambda extra: {}
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return lambda extra: extra
    names = {p.name for p in parameters[slots:] if p.kind is p.POSITIONAL_OR_KEYWORD}
    names |= {p.name for p in parameters if p.kind is p.KEYWORD_ONLY}
    return lambda extra: {k: v for k, v in extra.items() if k in names}


def stateless(f: Callable[..., Updates]) -> GradientTransformation:
    """Build a transform from ``f(updates, params) -> updates`` that keeps no state.

    ``f`` is optax's: it is called as ``f(updates, params)``. Extras reach it
    when it accepts them as keywords, e.g. ``stateless(lambda g, p, *, batch_size: ...)``.

    Args:
      f: a pure function of the updates and the params (which may be ``None``).

    Examples:
      >>> import jax, jax.numpy as jnp, gradtx
      >>> sign = gradtx.stateless(lambda updates, params: jax.tree.map(jnp.sign, updates))
      >>> updates, state = sign.update({"w": jnp.array([0.5, -3.0])}, sign.init(None))
      >>> print(updates["w"])
      [ 1. -1.]

    References:
      optax: ``optax.stateless``.
    """
    keep = extras_filter(f, slots=2)

    def update(updates, state, params=None, **extra):
        return f(updates, params, **keep(extra)), state

    return GradientTransformation(init_empty_state, update)


def stateless_with_tree_map(
    f: Callable[[jax.Array, jax.Array | None], jax.Array],
) -> GradientTransformation:
    """Build a stateless transform from a per-leaf ``f(update, param) -> update``.

    .. math:: u_i \\leftarrow f(g_i, \\theta_i)

    ``f`` is mapped over the leaves of the updates and the params; without
    params it gets ``None`` for each leaf's param.

    Args:
      f: a pure function of one update array and its param array (or ``None``).

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> decay = gradtx.stateless_with_tree_map(lambda g, p: g + 0.5 * p)
      >>> params = {"w": jnp.array([2.0, -4.0])}
      >>> updates, state = decay.update({"w": jnp.ones(2)}, decay.init(params), params)
      >>> print(updates["w"])
      [ 2. -1.]

    References:
      optax: ``optax.stateless_with_tree_map``.
    """

    def update(updates, state, params=None, **extra):
        if params is None:
            return jax.tree.map(lambda u: f(u, None), updates), state
        return jax.tree.map(f, updates, params), state

    return GradientTransformation(init_empty_state, update)


def with_extra_args_support(tx: GradientTransformation) -> GradientTransformationExtraArgs:
    """Wrap ``tx`` so that its ``update`` takes (and drops) any keyword extras.

    The wrapper hands ``tx`` the extras its ``update`` accepts by name, or all
    of them if it takes ``**extra`` (the rule of :func:`chain`); optax drops
    them all for a transform that is not a ``GradientTransformationExtraArgs``,
    which gives the same result for optax's transforms. ``tx`` is returned
    as it is when it is already a :class:`GradientTransformationExtraArgs`.

    Args:
      tx: a gradtx or optax gradient transformation.

    Examples:
      >>> import jax.numpy as jnp, optax, gradtx
      >>> tx = gradtx.with_extra_args_support(optax.scale(2.0))  # takes no extras itself
      >>> updates, _ = tx.update(jnp.ones(2), tx.init(None), None, value=1.0)
      >>> print(updates)
      [2. 2.]

    References:
      optax: ``optax.with_extra_args_support``.
    """
    if isinstance(tx, GradientTransformationExtraArgs):
        return tx
    keep = extras_filter(tx.update)

    def update(updates, state, params=None, **extra):
        return tx.update(updates, state, params, **keep(extra))

    return GradientTransformationExtraArgs(tx.init, update)


def chain(*transforms: GradientTransformation) -> GradientTransformation:
    """Apply transforms one after another; the state is the tuple of their states.

    .. math:: u \\leftarrow T_n(\\cdots T_2(T_1(g)))

    Each member receives only the keyword extras its ``update`` accepts, so
    ``optax`` transforms (which accept none) can sit beside gradtx ones.

    Args:
      *transforms: gradtx or optax gradient transformations, applied in order.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> opt = gradtx.chain(gradtx.clip_by_global_norm(1.0), gradtx.scale(-0.1))
      >>> grads = {"w": jnp.array([3.0, 4.0])}
      >>> updates, state = opt.update(grads, opt.init(grads))
      >>> print(np.asarray(updates["w"]).round(4))  # clipped to norm 1, then scaled
      [-0.06 -0.08]

    References:
      optax: ``optax.chain``.
    """
    for i, t in enumerate(transforms):
        if not (callable(getattr(t, "init", None)) and callable(getattr(t, "update", None))):
            raise TypeError(
                f"chain: argument {i} must be a gradient transformation with init and update, "
                f"got {type(t).__name__}; did you forget to call the factory, e.g. "
                f"gradtx.scale_by_adam() instead of gradtx.scale_by_adam?"
            )
    filters = tuple(extras_filter(t.update) for t in transforms)

    def init(params):
        return tuple(t.init(params) for t in transforms)

    def update(updates, state, params=None, **extra):
        if len(state) != len(transforms):
            raise ValueError(
                f"chain: state has {len(state)} entries but the chain has "
                f"{len(transforms)} transforms; was it made by this chain's init?"
            )
        new_state = []
        for t, keep, s in zip(transforms, filters, state, strict=True):
            updates, s = t.update(updates, s, params, **keep(extra))
            new_state.append(s)
        return updates, tuple(new_state)

    return recipe.with_recipe(GradientTransformation(init, update), recipe.chained(transforms))


def named_chain(*transforms: tuple[str, GradientTransformation]) -> GradientTransformation:
    """:func:`chain` with a name for each member; the state maps each name to its state.

    .. math:: u \\leftarrow T_n(\\cdots T_2(T_1(g)))

    The state is an ``OrderedDict`` (as optax's), so ``state["name"]`` reads a
    member's state and the members' order survives ``jax.tree`` (which sorts
    the keys of a plain dict).

    Args:
      *transforms: ``(name, transform)`` pairs, the names unique strings.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> opt = gradtx.named_chain(("clip", gradtx.clip(1.0)), ("scale", gradtx.scale(-0.5)))
      >>> updates, state = opt.update(jnp.array([3.0, -0.5]), opt.init(jnp.zeros(2)))
      >>> print(updates, list(state))
      [-0.5   0.25] ['clip', 'scale']

    References:
      optax: ``optax.named_chain``.
    """
    for i, pair in enumerate(transforms):
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)):
            raise ValueError(
                f"named_chain: argument {i} must be a (name, transform) pair with a string "
                f"name, got {type(pair).__name__}"
            )
    names = [name for name, _ in transforms]
    if len(names) != len(set(names)):
        duplicate = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"named_chain: names must be unique, got {duplicate!r} twice in {names}")
    filters = {name: extras_filter(t.update) for name, t in transforms}

    def init(params):
        return collections.OrderedDict((name, t.init(params)) for name, t in transforms)

    def update(updates, state, params=None, **extra):
        new_state = collections.OrderedDict()
        for name, t in transforms:
            keep = filters[name]
            updates, new_state[name] = t.update(updates, state[name], params, **keep(extra))
        return updates, new_state

    return GradientTransformation(init, update)


def apply_updates(params: Params, updates: Updates) -> Params:
    """Return ``params + updates``, each leaf keeping its parameter's dtype.

    .. math:: \\theta \\leftarrow \\theta + u

    The sum is computed in the promoted dtype and cast back, so bfloat16
    parameters stay bfloat16 even when updates are float32. A ``float0``
    update (what ``jax.grad(..., allow_int=True)`` gives for an integer
    param, passed through by the learners) leaves its param as it is.

    Args:
      params: the parameter tree.
      updates: a tree of the same structure and shapes, e.g. from ``update``.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> params = {"w": jnp.ones(2, jnp.bfloat16)}
      >>> new = gradtx.apply_updates(params, {"w": jnp.array([0.5, -0.5])})
      >>> print(new["w"], new["w"].dtype)
      [1.5 0.5] bfloat16

    References:
      optax: ``optax.apply_updates``.
    """
    check_trees_match("apply_updates", "params", params, updates=updates)

    def one(p: Any, u: Any) -> Any:
        if jnp.result_type(u) == jax.dtypes.float0:
            return p
        return jnp.asarray(p + u).astype(jnp.asarray(p).dtype)

    return jax.tree.map(one, params, updates)


def float_leaves(transform: GradientTransformation) -> GradientTransformation:
    """Run ``transform`` on the floating and complex leaves only, float16 ones in float32.

    Integer, boolean and ``float0`` leaves (step counters, masks, embedding
    indices kept in the params, and their gradients) get their incoming
    update back untouched, so :func:`apply_updates` leaves them as they are.
    Complex leaves are updated like real ones (the blocks take their second
    moments from :math:`g\\bar g`, as optax does; a block with no complex rule
    raises naming the leaf). float16 leaves are promoted to float32 for the
    arithmetic and the state (float16's range loses ``eps = 1e-8`` and small
    squared gradients, which turns zero gradients into 0/0), and their updates
    are cast back. Trees of float32, float64, bfloat16 and complex leaves go
    straight to ``transform``, and every update comes back in its gradient's
    dtype. Every gradtx learner is wrapped in it.

    Args:
      transform: the transform to protect.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> opt = gradtx.float_leaves(gradtx.scale(-0.5))
      >>> grads = {"w": jnp.array([1.0, -2.0]), "step": jnp.array(3)}
      >>> updates, state = opt.update(grads, opt.init(grads))
      >>> print(updates["w"], updates["step"])  # the integer leaf comes back as it was
      [-0.5  1. ] 3
    """
    keep = extras_filter(transform.update)

    def plan(tree: Any) -> tuple[list[Any], Any, bool]:
        leaves, treedef = jax.tree.flatten(tree)
        plain = all(
            jnp.issubdtype(jnp.result_type(x), jnp.inexact) and jnp.result_type(x) != jnp.float16
            for x in leaves
        )
        return leaves, treedef, plain

    def prepare(leaves: list[Any], treedef: Any) -> Any:
        def one(x: Any) -> Any:
            dtype = jnp.result_type(x)
            if not jnp.issubdtype(dtype, jnp.inexact):
                return None
            return jnp.asarray(x, jnp.float32) if dtype == jnp.float16 else x

        return jax.tree.unflatten(treedef, [one(x) for x in leaves])

    def init(params):
        leaves, treedef, plain = plan(params)
        return transform.init(params if plain else prepare(leaves, treedef))

    def update(updates, state, params=None, **extra):
        leaves, treedef, plain = plan(updates)
        param_plan = None if params is None else plan(params)
        if plain and (param_plan is None or param_plan[2]):
            out, state = transform.update(updates, state, params, **keep(extra))
            # Blocks that widen (e.g. bfloat16 gradients against float32 progress) hand back
            # the gradients' dtype here; for matching dtypes this is no operation.
            return jax.tree.map(
                lambda u, g: jnp.asarray(u, jnp.result_type(g)), out, updates
            ), state
        inner_params = None if param_plan is None else prepare(*param_plan[:2])
        if extra.get("grad") is not None:  # a line search's gradient: the same leaves
            extra = {**extra, "grad": prepare(*plan(extra["grad"])[:2])}
        out, state = transform.update(prepare(leaves, treedef), state, inner_params, **keep(extra))
        merged = [
            g if u is None else jnp.asarray(u, jnp.result_type(g))
            for g, u in zip(leaves, treedef.flatten_up_to(out), strict=True)
        ]
        return jax.tree.unflatten(treedef, merged), state

    # The state is the member's; the recipe holds where every leaf goes straight to it.
    return recipe.with_recipe(GradientTransformation(init, update), recipe.recipe_of(transform))
