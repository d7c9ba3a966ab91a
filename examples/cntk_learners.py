"""CNTK's "how to use learners" walk-through in gradtx.

One parameter starts at 0 and every sample's gradient is 1, so a minibatch of
B samples hands the learner the summed gradient B (CNTK's convention). Each
learner runs at minibatch sizes 2, 10 and 32, with momenta given as time
constants of 300 and 1000 samples, and the table shows the parameter after 5
and after 10 updates. The last rows are the two ways CNTK lets users write a
learner, as gradtx transforms: an expression (an SGD whose rate is divided by
the sample count) and a class (an RMSProp whose accumulator starts at 1e-6).

    python examples/cntk_learners.py
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

import gradtx
from gradtx import cntk as C

BATCH_SIZES = (2, 10, 32)
UPDATES = (5, 10)
LR = C.learning_rate_schedule(0.1, C.UnitType.minibatch)  # 0.1 on the mean gradient


# --8<-- [start:own_learners]
def sgd_per_sample_count(lr: float) -> gradtx.GradientTransformation:
    """CNTK's "expression" learner: ``p - lr * g / batch_size``, as a stateless transform."""
    return gradtx.stateless(
        lambda g, params, *, batch_size: jax.tree.map(lambda x: -lr * x / batch_size, g)
    )


class RmsState(NamedTuple):
    accumulator: jax.Array


def hand_written_rmsprop(lr: float, gamma: float = 0.9) -> gradtx.GradientTransformation:
    """CNTK's "class" learner: an RMSProp whose accumulator starts at 1e-6, from scratch."""

    def init(params):
        return RmsState(jax.tree.map(lambda p: jnp.full_like(p, 1e-6), params))

    def update(updates, state, params=None, **extra):
        acc = jax.tree.map(lambda a, g: gamma * a + (1 - gamma) * g * g, state.accumulator, updates)
        updates = jax.tree.map(lambda g, a: -lr * g / jnp.sqrt(a), updates, acc)
        return updates, RmsState(acc)

    return gradtx.GradientTransformation(init, update)


# --8<-- [end:own_learners]


def learners(time_constant: float) -> dict[str, gradtx.GradientTransformation]:
    momentum = C.momentum_as_time_constant_schedule(time_constant)
    return {
        "sgd": C.sgd(LR),
        "momentum_sgd": C.momentum_sgd(LR, momentum),
        "momentum_sgd (unit_gain=False)": C.momentum_sgd(LR, momentum, unit_gain=False),
        "nesterov": C.nesterov(LR, momentum),
        "adagrad": C.adagrad(LR),
        "rmsprop": C.rmsprop(LR, gamma=0.95, inc=1.2, dec=0.7, max=1.0, min=1e-3),
        "fsadagrad": C.fsadagrad(LR, momentum),
        "adam": C.adam(LR, momentum),
        "adam (adamax)": C.adam(LR, momentum, adamax=True),
        "adadelta": C.adadelta(),
        "expression: sgd / samples": sgd_per_sample_count(0.1),
        "class: rmsprop from 1e-6": hand_written_rmsprop(0.01),
    }


def trajectory(opt: gradtx.GradientTransformation, batch_size: int) -> list[float]:
    """The parameter after each of max(UPDATES) updates with gradient ``batch_size``."""
    params = {"p": jnp.zeros(())}
    state = opt.init(params)
    update = jax.jit(lambda g, s, p: opt.update(g, s, p, batch_size=batch_size))
    values = []
    for _ in range(max(UPDATES)):
        updates, state = update({"p": jnp.asarray(float(batch_size))}, state, params)
        params = gradtx.apply_updates(params, updates)
        values.append(float(params["p"]))
    return values


def main() -> None:
    columns = [f"B={b}, n={n}" for b in BATCH_SIZES for n in UPDATES]
    for time_constant in (300, 1000):
        momenta = ", ".join(
            f"B={b}: m={C.momentum_from_time_constant(time_constant, b):.4f}" for b in BATCH_SIZES
        )
        print(f"\nmomentum time constant {time_constant} samples ({momenta})")
        print(f"{'learner':<32}" + "".join(f"{c:>14}" for c in columns))
        for name, opt in learners(time_constant).items():
            runs = {b: trajectory(opt, b) for b in BATCH_SIZES}
            cells = [runs[b][n - 1] for b in BATCH_SIZES for n in UPDATES]
            print(f"{name:<32}" + "".join(f"{v:>14.6f}" for v in cells))


if __name__ == "__main__":
    main()
