"""Property checks for transforms and schedules, the ones gradtx runs on itself.

``check_transform(tx, params)`` and ``check_schedule(schedule)`` run a battery
of checks and raise one :class:`CheckFailed` listing every property that does
not hold, so a user's own transform gets the same scrutiny as the catalogue.
:func:`pytrees` and :func:`hyperparameters` are hypothesis strategies for
property tests (hypothesis is needed only for them). :func:`to_numpy` reads a
state leaf for NumPy's comparisons, PRNG keys included.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from gradtx.core import GradientTransformation, chain, identity
from gradtx.tree import INT32_MAX


class CheckFailed(AssertionError):
    """Raised with every failed property of one check, each with its reason."""

    def __init__(self, who: str, failures: list[tuple[str, str]]):
        self.failures = failures
        lines = [f"{who}: {len(failures)} propert{'y' if len(failures) == 1 else 'ies'} failed"]
        lines += [f"  - {name}: {reason}" for name, reason in failures]
        super().__init__("\n".join(lines))


class _Battery:
    def __init__(self) -> None:
        self.failures: list[tuple[str, str]] = []

    @contextlib.contextmanager
    def check(self, name: str) -> Iterator[None]:
        try:
            yield
        except Exception as error:  # noqa: BLE001  (every failure is reported, not raised)
            text = " ".join(str(error).split())
            text = text if len(text) <= 200 else text[:199] + "…"
            self.failures.append((name, f"{type(error).__name__}: {text}"))


def _path(path: Any) -> str:
    return jax.tree_util.keystr(path) or "(root)"


def to_numpy(x: Any) -> np.ndarray:
    """A leaf as a NumPy array; a typed PRNG key (``add_noise``'s state) as its key data.

    NumPy's comparisons cannot read a typed key; its key data compares as integers.

    Examples:
      >>> import jax
      >>> from gradtx.testing import to_numpy
      >>> to_numpy(jax.random.key(0)).dtype
      dtype('uint32')
    """
    if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    return np.array(x)


def _same(a: Any, b: Any, what: str, rtol: float = 0.0, atol: float = 0.0) -> None:
    """Trees equal in structure, shape, dtype and value (bitwise when tolerances are 0)."""
    if jax.tree.structure(a) != jax.tree.structure(b):
        raise AssertionError(
            f"{what}: tree structures differ: {jax.tree.structure(a)} vs {jax.tree.structure(b)}"
        )
    for (path, x), y in zip(
        jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b), strict=True
    ):
        x, y = to_numpy(x), to_numpy(y)
        if x.shape != y.shape or x.dtype != y.dtype:
            raise AssertionError(
                f"{what}: at {_path(path)}: {x.shape} {x.dtype} vs {y.shape} {y.dtype}"
            )
        if x.dtype == jax.dtypes.float0:
            continue
        if rtol == 0 and atol == 0:
            if not np.array_equal(x, y, equal_nan=np.issubdtype(x.dtype, np.inexact)):
                raise AssertionError(f"{what}: at {_path(path)}: values differ")
        else:
            if np.issubdtype(x.dtype, np.complexfloating):
                wide = np.complex128
            else:
                wide = np.float64 if np.issubdtype(x.dtype, np.inexact) else x.dtype
            np.testing.assert_allclose(
                x.astype(wide),
                y.astype(wide),
                rtol=rtol,
                atol=atol,
                err_msg=f"{what}: at {_path(path)}",
            )


def _same_types(a: Any, b: Any, what: str) -> None:
    """Trees equal in structure, shapes and dtypes (values free), checked with chex."""
    try:
        chex.assert_trees_all_equal_structs(a, b)
        chex.assert_trees_all_equal_shapes_and_dtypes(a, b)
    except AssertionError as error:
        raise AssertionError(f"{what}: {' '.join(str(error).split())}") from None


def gradients_like(params: Any, step: int, seed: int = 0) -> Any:
    """Seeded normal noise shaped like the floating leaves of ``params`` (zeros elsewhere).

    Complex leaves get independent noise in their real and imaginary parts.
    """
    leaves, treedef = jax.tree.flatten(params)
    rng = np.random.default_rng([seed, step])
    out = []
    for x in leaves:
        dtype = jnp.result_type(x)
        if jnp.issubdtype(dtype, jnp.complexfloating):
            noise = rng.normal(size=np.shape(x)) + 1j * rng.normal(size=np.shape(x))
            out.append(jnp.asarray(noise, dtype))
        elif jnp.issubdtype(dtype, jnp.inexact):
            out.append(jnp.asarray(rng.normal(size=np.shape(x)), dtype))
        else:
            out.append(jnp.zeros(np.shape(x), dtype))
    return jax.tree.unflatten(treedef, out)


def _same_runs(a: list, b: list, what: str, rtol: float = 0.0, atol: float = 0.0) -> None:
    for t, ((ua, sa), (ub, sb)) in enumerate(zip(a, b, strict=True)):
        _same(ua, ub, f"{what}, step {t} updates", rtol, atol)
        _same(sa, sb, f"{what}, step {t} state", rtol, atol)


def _run(update: Callable, state: Any, params: Any, grads: list, extra: dict) -> list:
    out = []
    for g in grads:
        u, state = update(g, state, params, **extra)
        out.append((u, state))
    return out


def _buffer(x: Any) -> int | None:
    """The device buffer behind a leaf (None for what holds none: non-arrays, empty, keys)."""
    if not isinstance(x, jax.Array) or x.size == 0 or jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        return None
    return x.addressable_shards[0].data.unsafe_buffer_pointer()


def _shared_buffers(state: Any, params: Any) -> list[str]:
    """The paths of state leaves that hold the buffer of a param or of an earlier leaf.

    A training step donates the params and the state (``jit(..., donate_argnums=...)``,
    as :func:`gradtx.make_train_step` does), and XLA refuses to donate one buffer twice.
    """
    seen: dict[int, str] = {}
    for path, x in jax.tree_util.tree_flatten_with_path(params)[0]:
        if (buffer := _buffer(x)) is not None:
            seen.setdefault(buffer, "params" + _path(path))
    shared = []
    for path, x in jax.tree_util.tree_flatten_with_path(state)[0]:
        if (buffer := _buffer(x)) is None:
            continue
        if buffer in seen:
            shared.append(f"{_path(path)} (the buffer of {seen[buffer]})")
        seen.setdefault(buffer, _path(path))
    return shared


def check_transform(
    tx: GradientTransformation,
    params: Any,
    *,
    steps: int = 3,
    extra: dict[str, Any] | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    seed: int = 0,
    name: str | None = None,
) -> None:
    """Check that ``tx`` behaves as a gradient transformation should; raise listing what does not.

    With gradients from :func:`gradients_like`, the properties are:

    - ``init`` runs and is pure (two calls give bitwise-equal states), and
      ``jax.eval_shape(tx.init, params)`` gives the real state's shapes and dtypes;
    - ``update`` runs for ``steps`` steps and is pure: the same inputs give
      bitwise-equal outputs, and no call changes the state it was given;
    - updates have the gradients' tree structure, shapes and dtypes, and the
      state keeps its structure, shapes and dtypes from step to step;
    - under ``jax.jit`` the results agree with the eager ones (``rtol``, ``atol``);
    - ``jax.vmap`` of ``update`` over a batch of two states and gradients agrees
      with the two calls one by one;
    - ``tx`` composes: ``chain(tx)`` and ``chain(identity(), tx)`` give its results.

    Args:
      tx: the transform.
      params: example params (any pytree of arrays).
      steps: updates to run, at least 2.
      extra: keyword extras for ``update`` (e.g. ``{"value": 1.0, "batch_size": 8}``).
      rtol: relative tolerance for the jit and vmap comparisons.
      atol: absolute tolerance for the jit and vmap comparisons.
      seed: seed of the gradients.
      name: what to call ``tx`` in the report.

    Raises:
      CheckFailed: listing every property that failed.
    """
    extra = dict(extra or {})
    who = f"check_transform({name or 'tx'})"
    battery = _Battery()
    grads = [gradients_like(params, t, seed) for t in range(max(2, steps))]

    with battery.check("init runs"):
        state = tx.init(params)
    if battery.failures:
        raise CheckFailed(who, battery.failures)
    with battery.check("init is pure"):
        _same(tx.init(params), state, "two init calls")
    with battery.check("no state leaf shares a buffer with a param or another leaf"):
        if shared := _shared_buffers(state, params):
            raise AssertionError("init's state: " + ", ".join(shared))
    with battery.check("jax.eval_shape(tx.init, params) works"):
        _same_types(jax.eval_shape(tx.init, params), state, "eval_shape vs init")

    snapshot = jax.tree.map(to_numpy, state)
    eager = None
    with battery.check("update runs"):
        eager = _run(tx.update, state, params, grads, extra)
    if eager is None:
        raise CheckFailed(who, battery.failures)
    with battery.check("update is pure (same inputs, same outputs)"):
        _same_runs(_run(tx.update, state, params, grads, extra), eager, "two runs")
    with battery.check("update leaves the state it is given unchanged"):
        _same(jax.tree.map(to_numpy, state), snapshot, "state before and after")
    with battery.check("updates keep the gradients' structure, shapes and dtypes"):
        for t, (u, _) in enumerate(eager):
            _same_types(u, grads[t], f"step {t}: updates vs gradients")
    with battery.check("the state keeps its structure, shapes and dtypes"):
        for t, (_, s) in enumerate(eager):
            _same_types(s, state, f"step {t}: state vs init")
            # Under jit a state that keeps the params gets buffers of its own: only the
            # state leaves among themselves are checked here.
            if shared := _shared_buffers(s, {}):
                raise AssertionError(f"step {t}'s state: " + ", ".join(shared))
    with battery.check("jit agrees with no jit"):
        jitted = jax.jit(lambda g, s, p: tx.update(g, s, p, **extra))
        compiled = _run(lambda g, s, p: jitted(g, s, p), state, params, grads, {})
        _same_runs(compiled, eager, "jit vs eager", rtol, atol)
    with battery.check("vmap over states and gradients agrees with a loop"):
        states = [state, eager[0][1]]
        batch = [grads[1], grads[0]]
        stack = lambda trees: jax.tree.map(lambda *xs: jnp.stack(xs), *trees)  # noqa: E731
        mapped = jax.vmap(lambda g, s: tx.update(g, s, params, **extra), axis_size=2)(
            stack(batch), stack(states)
        )
        looped = stack(
            [tx.update(g, s, params, **extra) for g, s in zip(batch, states, strict=True)]
        )
        _same(mapped, looped, "vmap vs loop", rtol, atol)
    with battery.check("composes in chain"):
        for name, wrapped in (
            ("chain(tx)", chain(tx)),
            ("chain(identity(), tx)", chain(identity(), tx)),
        ):
            runs = _run(wrapped.update, wrapped.init(params), params, grads, extra)
            for t, ((u, _), (expected, _)) in enumerate(zip(runs, eager, strict=True)):
                _same(u, expected, f"{name}, step {t} updates", rtol, atol)
    if battery.failures:
        raise CheckFailed(who, battery.failures)


def _sample_counts(max_count: int) -> list[int]:
    counts = {0, 1, 2, 3, 10, 99, 100, 101, 1000, max_count, max_count - 1, max_count // 2}
    counts |= {10**k for k in range(2, 10)} | {2**k for k in range(4, 31)}
    return sorted(c for c in counts if 0 <= c <= max_count)


def check_schedule(
    schedule: Callable[[Any], Any], *, max_count: int = INT32_MAX, rtol: float = 1e-5
) -> None:
    """Check that ``schedule`` is a well-behaved function of the step count; raise if not.

    The properties: a float scalar for a scalar ``int32`` count, finite at 0, at
    sample counts up to ``max_count`` and at ``max_count``; evaluating an array
    of counts equals evaluating them one by one; ``jax.jit`` agrees; no float64
    in the result under the default settings.

    Args:
      schedule: a function of the count.
      max_count: the largest count to try (the int32 maximum by default).
      rtol: relative tolerance for the array and jit comparisons (plus an absolute
        1e-7 of the largest value, for values near 0).

    Raises:
      CheckFailed: listing every property that failed.
    """
    who = f"check_schedule({getattr(schedule, '__name__', type(schedule).__name__)})"
    battery = _Battery()
    counts = _sample_counts(max_count)
    with battery.check("returns a float scalar for a scalar count"):
        first = schedule(jnp.asarray(0, jnp.int32))
        if np.shape(first) != ():
            raise AssertionError(f"shape {np.shape(first)} for count 0")
        if not jnp.issubdtype(jnp.result_type(first), jnp.floating):
            raise AssertionError(f"dtype {jnp.result_type(first)}")
    if battery.failures:
        raise CheckFailed(who, battery.failures)
    values = []
    with battery.check("evaluates at every sample count"):
        values = [np.asarray(schedule(jnp.asarray(c, jnp.int32))) for c in counts]
    if values:
        magnitudes = np.abs(np.stack(values))
        atol = 1e-7 * float(np.max(magnitudes[np.isfinite(magnitudes)], initial=1.0))
        with battery.check("finite at 0"):
            if not np.isfinite(values[0]):
                raise AssertionError(f"schedule(0) = {values[0]}")
        with battery.check("finite at the sample counts"):
            bad = [(c, v) for c, v in zip(counts, values, strict=True) if not np.isfinite(v)]
            if bad:
                raise AssertionError(f"schedule({bad[0][0]}) = {bad[0][1]} ({len(bad)} counts)")
        with battery.check(f"finite at max_count={max_count}"):
            if not np.isfinite(values[-1]):
                raise AssertionError(f"schedule({max_count}) = {values[-1]}")
        with battery.check("array evaluation equals scalar evaluation"):
            together = np.asarray(schedule(jnp.asarray(counts, jnp.int32)))
            np.testing.assert_allclose(
                together, np.stack(values), rtol=rtol, atol=atol, equal_nan=True
            )
        with battery.check("jit agrees"):
            jitted = jax.jit(schedule)
            compiled = [np.asarray(jitted(jnp.asarray(c, jnp.int32))) for c in counts]
            np.testing.assert_allclose(
                np.stack(compiled), np.stack(values), rtol=rtol, atol=atol, equal_nan=True
            )
        with battery.check("no float64 promotion"):
            if any(v.dtype == np.float64 for v in values):
                raise AssertionError("the schedule returns float64")
    if battery.failures:
        raise CheckFailed(who, battery.failures)


# -- hypothesis strategies ---------------------------------------------------------------------


class Pair(NamedTuple):
    """A NamedTuple node for :func:`pytrees`."""

    first: Any
    second: Any


def _hypothesis():
    try:
        from hypothesis import strategies as st
    except ImportError as error:
        raise ImportError(
            "gradtx.testing strategies need hypothesis: pip install hypothesis"
        ) from error
    return st


def pytrees(max_leaves: int = 6, dtypes: tuple = (jnp.float32,), allow_none: bool = True):
    """Hypothesis strategy: nested dicts, lists, tuples and NamedTuples of random arrays.

    Leaves have random shapes of up to 3 dimensions, 0-d and empty arrays
    included, of the given ``dtypes``; with ``allow_none`` some leaves are None
    (never the whole tree, which ``update`` would read as "no params").

    Args:
      max_leaves: the most leaves (None included) in a tree.
      dtypes: the dtypes leaves are drawn from.
      allow_none: whether some leaves may be None.
    """
    st = _hypothesis()
    shapes = st.lists(st.integers(0, 3), min_size=0, max_size=3).map(tuple)
    arrays = st.tuples(shapes, st.integers(0, 2**16), st.sampled_from(dtypes)).map(
        lambda a: jnp.asarray(np.random.default_rng(a[1]).normal(size=a[0]), a[2])
    )
    leaves = st.one_of(arrays, st.none()) if allow_none else arrays
    keys = st.text("abcxyz", min_size=1, max_size=3)
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, min_size=1, max_size=3),
            st.tuples(children, children),
            st.builds(Pair, children, children),
            st.dictionaries(keys, children, min_size=1, max_size=3),
        ),
        max_leaves=max_leaves,
    ).filter(lambda tree: tree is not None)  # None as the whole tree reads as "no params"


def _strategies() -> dict[str, Any]:
    st = _hypothesis()
    decay = st.floats(0.0, 0.99)
    return {
        "learning_rate": st.floats(1e-4, 1.0),
        "momentum": decay,
        "b1": decay,
        "b2": st.floats(0.5, 0.999),
        "decay": st.floats(0.5, 0.99),  # a running mean; 0 makes a centered variance 0/0
        "rho": st.floats(0.5, 0.99),
        "eps": st.floats(1e-8, 1e-3),
        "eps_root": st.floats(0.0, 1e-8),
        "weight_decay": st.floats(0.0, 0.1),
        "initial_accumulator_value": st.floats(0.0, 1.0),
        "initial_scale": st.floats(0.0, 1.0),
        "nesterov": st.booleans(),
        "unit_gain": st.booleans(),
        "centered": st.booleans(),
        "eps_in_sqrt": st.booleans(),
        "debias": st.booleans(),
        "normalize": st.booleans(),
        "step_size": st.floats(-1.0, 1.0),
        "max_norm": st.floats(1e-3, 10.0),
        "max_delta": st.floats(1e-3, 10.0),
    }


def hyperparameters(learner: Callable[..., GradientTransformation], **fixed: Any):
    """Hypothesis strategy: keyword arguments that ``learner`` accepts, drawn from valid ranges.

    Arguments gradtx knows by name (``learning_rate``, ``b1``, ``eps``,
    ``momentum``, ``nesterov``, ...) are drawn; other optional ones keep their
    defaults. ``fixed`` gives values (or strategies) for arguments to pin or
    that gradtx cannot guess. Draws the learner rejects are discarded.

    Args:
      learner: a factory such as ``gradtx.adam``.
      **fixed: values or strategies for arguments to pin or to supply.

    Raises:
      ValueError: if a required argument has no known strategy and is not in ``fixed``.
    """
    st = _hypothesis()
    known = _strategies()
    drawn: dict[str, Any] = {}
    for name, parameter in inspect.signature(learner).parameters.items():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if name in fixed:
            value = fixed[name]
            drawn[name] = value if isinstance(value, st.SearchStrategy) else st.just(value)
        elif name in known:
            drawn[name] = known[name]
        elif parameter.default is parameter.empty:
            raise ValueError(
                f"hyperparameters: no strategy for {learner.__name__}'s required argument "
                f"{name!r}; pass {name}=<value or strategy>"
            )

    def valid(kwargs: dict) -> bool:
        try:
            learner(**kwargs)
        except (ValueError, TypeError):
            return False
        return True

    return st.fixed_dictionaries(drawn).filter(valid)
