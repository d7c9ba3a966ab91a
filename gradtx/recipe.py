"""A transform's recipe: what it does to each element, as data.

A block whose update is one pass over the elements (each element of its
output a function of the same element of its input, of the params and of its
moments, given a few scalars) declares its :class:`Rule` with
:func:`declare`. Its recipe then says, for any state of the block, the rule's
scalars at this step, its moments, and how to put new moments back.

:func:`gradtx.chain`, :func:`gradtx.float_leaves` and
:func:`gradtx.inject_hyperparams` compose their members' recipes, finding each
member's state by identity of the wrapper that holds it, never by position in
another module's tuple. Every other wrapper has no recipe, so nothing that
reads recipes can misread its state: it takes the plain path.

The reader is :func:`gradtx.fused_update`, which maps a recipe to a CPU kernel.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

__all__ = [
    "COMPOSITES",
    "RULES",
    "Recipe",
    "Rule",
    "Stage",
    "chained",
    "composed",
    "composite",
    "declare",
    "nested",
    "recipe_of",
    "rule",
    "with_recipe",
]


class Rule(NamedTuple):
    """A per-element rule that blocks declare: its name, scalars, options and moments.

    ``kernel`` names the FFI target of its fused CPU kernel (``gradtx/fused/kernels.cc``),
    whose scalar and option layout is generated from these names. ``signed``: the
    kernel also takes the sign of the rule's direction (a ``scale_by_sign`` that follows
    the block), as an option the kernel's caller sets, not the block.
    """

    name: str
    scalars: tuple[str, ...] = ()  # floats given at each step, e.g. ("b1", "one_minus_b1")
    options: tuple[str, ...] = ()  # booleans fixed when the block is built, e.g. ("nesterov",)
    moments: tuple[str, ...] = ()  # fields of the block's state updated per element
    kernel: str | None = None
    signed: bool = False


# Every rule by name: the kernels' layout (gradtx/fused/layout.py) is generated from it.
RULES: dict[str, Rule] = {}


def rule(
    name: str,
    *,
    scalars: tuple[str, ...] = (),
    options: tuple[str, ...] = (),
    moments: tuple[str, ...] = (),
    kernel: str | None = None,
    signed: bool = False,
) -> Rule:
    """Define a rule once, at the top of the module of the block that declares it."""
    new = Rule(name, scalars, options, moments, kernel, signed)
    if RULES.setdefault(name, new) != new:
        raise ValueError(f"gradtx.recipe: a different rule named {name!r} exists: {RULES[name]}")
    return new


# The rules that run two blocks' rules in one pass, by the pair: see composite.
COMPOSITES: dict[tuple[Rule, Rule], Rule] = {}


def composite(name: str, first: Rule, then: Rule, *, kernel: str) -> Rule:
    """Define the rule of ``first``'s block followed by ``then``'s, run by one kernel.

    ``then``'s per-element step takes ``first``'s direction as its gradient. The new
    rule's scalars, options and moments are ``first``'s, then ``then``'s (no name may
    be in both), so each part of the kernel finds its own at a fixed offset. ``then``'s
    scalars must not depend on the updates reaching its block: the kernel computes
    them in the same pass, so a recipe never has them. A recipe that lists the two
    blocks in a row runs this rule's kernel (see :func:`composed`).
    """
    for field in ("scalars", "options", "moments"):
        clash = set(getattr(first, field)) & set(getattr(then, field))
        if clash:
            raise ValueError(
                f"gradtx.recipe: {first.name} and {then.name} both have {field} {sorted(clash)}"
            )
    new = rule(
        name,
        scalars=first.scalars + then.scalars,
        options=first.options + then.options,
        moments=first.moments + then.moments,
        kernel=kernel,
    )
    COMPOSITES[(first, then)] = new
    return new


def composed(first: Rule, then: Rule) -> Rule | None:
    """The rule that runs ``first`` then ``then`` in one pass, if one is defined."""
    return COMPOSITES.get((first, then))


class Stage(NamedTuple):
    """One block of a recipe at one step, seen from the state of the whole transform."""

    rule: Rule
    scalars: Callable[[Any], Mapping[str, Any]]  # the block's incoming updates -> its scalars
    options: Mapping[str, bool]
    moments: tuple[Any, ...]  # the moment trees of the state read, in the rule's order
    put: Callable[[Any, tuple[Any, ...]], Any]  # (a new state of the whole, new moments) -> it
    # What the block's moments round with into a narrow state dtype (tree.moment's seed).
    seed: Any = 0

    def values(self, updates: Any) -> list[Any]:
        """The rule's scalars in its order, given the updates that reach the block."""
        given = self.scalars(updates)
        if set(given) != set(self.rule.scalars):
            raise ValueError(
                f"gradtx.recipe: {self.rule.name} declares scalars {sorted(given)}; its rule "
                f"has {sorted(self.rule.scalars)}"
            )
        return [given[name] for name in self.rule.scalars]


# A recipe maps a state of its transform to its stages, or to None where it has none for it.
Recipe = Callable[[Any], "tuple[Stage, ...] | None"]

# Keyed by the transform's update function: a transform's identity, kept by any wrapper that
# passes the pair on unchanged, and dropped by every wrapper that makes an update of its own.
_RECIPES: weakref.WeakKeyDictionary[Callable, Recipe] = weakref.WeakKeyDictionary()


def recipe_of(transform: Any) -> Recipe | None:
    """The recipe of ``transform``, or None (an undeclared block, an unknown wrapper, optax)."""
    try:
        return _RECIPES.get(transform.update)
    except TypeError:  # an update that cannot be weakly referenced has none
        return None


def with_recipe(transform: Any, recipe: Recipe | None) -> Any:
    """``transform``, known from now on to follow ``recipe`` (None: nothing is recorded)."""
    if recipe is not None:
        _RECIPES[transform.update] = recipe
    return transform


def _put_moments(names: tuple[str, ...], state: Any, moments: tuple[Any, ...]) -> Any:
    return state._replace(**dict(zip(names, moments, strict=True))) if names else state


def declare(
    transform: Any,
    rule: Rule,
    scalars: Callable[[Any, Any], Mapping[str, Any]] = lambda state, updates: {},
    seed: Callable[[Any], Any] = lambda state: 0,
    **options: bool,
) -> Any:
    """Declare that the block ``transform`` applies ``rule``; return it.

    Args:
      transform: the block, whose state has a field for each of the rule's moments.
      rule: what it does per element.
      scalars: ``(block state, incoming updates) -> {name: value}`` for the rule's
        scalars at the step that state is about to take.
      seed: ``block state -> the seed`` its update passes ``tree.moment`` (the
        stochastic rounding into a bfloat16 state) at that step.
      **options: the rule's options, as the block was built.
    """
    if set(options) != set(rule.options):
        raise ValueError(f"gradtx.recipe: {rule.name} takes options {rule.options}, got {options}")

    def recipe(state: Any) -> tuple[Stage, ...]:
        moments = tuple(getattr(state, name) for name in rule.moments)
        put = functools.partial(_put_moments, rule.moments)
        stage = Stage(rule, functools.partial(scalars, state), options, moments, put, seed(state))
        return (stage,)

    return with_recipe(transform, recipe)


def nested(inner: Recipe, get: Callable[[Any], Any], put: Callable[[Any, Any], Any]) -> Recipe:
    """The recipe of a wrapper whose state holds its member's at ``get(state)``.

    ``put(state, member_state)`` is the wrapper's state with the member's replaced.
    """

    def lift(stage: Stage) -> Stage:
        return stage._replace(put=lambda whole, moments: put(whole, stage.put(get(whole), moments)))

    def recipe(state: Any) -> tuple[Stage, ...] | None:
        stages = inner(get(state))
        return None if stages is None else tuple(lift(s) for s in stages)

    return recipe


def chained(transforms: tuple[Any, ...]) -> Recipe | None:
    """The recipe of ``chain(*transforms)``: its members' stages in order, or None."""
    recipes = [recipe_of(t) for t in transforms]
    if any(r is None for r in recipes):
        return None
    members = [
        nested(r, lambda s, i=i: s[i], lambda s, x, i=i: (*s[:i], x, *s[i + 1 :]))
        for i, r in enumerate(recipes)
        if r is not None  # all are: this narrows the type
    ]

    def recipe(state: Any) -> tuple[Stage, ...] | None:
        stages: list[Stage] = []
        for member in members:
            found = member(state)
            if found is None:
                return None
            stages += found
        return tuple(stages)

    return recipe
