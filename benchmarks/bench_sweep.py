"""A 64-point hyperparameter sweep in one ``gradtx.sweep`` call against 64 runs in a Python loop.

Both sides train the same digits MLP with AdamW and a warm-up-cosine schedule
on the same minibatches; the loop side is what one writes by hand: one jitted,
donated step (compiled once, the hyperparameters passed as arguments), called
step after step, run after run. Rounds alternate the two sides; figures are
medians over rounds, and the ratio is the median of per-round quotients.

    python benchmarks/bench_sweep.py [--rounds 3] [--steps 300]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

import gradtx  # noqa: E402

RATES = np.geomspace(1e-4, 1e-1, 32).astype(np.float32)
DECAYS = np.array([0.0, 1e-2], np.float32)


def load(steps: int, batch: int = 64):
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    idx = np.random.default_rng(0).integers(0, len(x), size=(steps, batch))
    return jnp.asarray(x[idx]), jnp.asarray(y[idx])


def init(key, sizes=(64, 64, 10)):
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        (jax.random.normal(k, (m, n)) * jnp.sqrt(2.0 / m), jnp.zeros(n))
        for k, m, n in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]


def loss_fn(params, x, y):
    for w, b in params[:-1]:
        x = jax.nn.relu(x @ w + b)
    w, b = params[-1]
    logp = jax.nn.log_softmax(x @ w + b)
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))


def learner(learning_rate, weight_decay, steps):
    schedule = gradtx.schedules.warmup(
        gradtx.schedules.cosine_decay(learning_rate, steps - steps // 10), steps // 10
    )
    return gradtx.adamw(schedule, weight_decay=weight_decay)


def sweep_side(xs, ys):
    steps = xs.shape[0]

    def train_fn(learning_rate, weight_decay):
        opt = learner(learning_rate, weight_decay, steps)
        params = init(jax.random.key(0))

        def step(carry, batch):
            params, state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params, *batch)
            updates, state = opt.update(grads, state, params)
            return (gradtx.apply_updates(params, updates), state), loss

        _, losses = jax.lax.scan(step, (params, opt.init(params)), (xs, ys))
        return {"loss": jnp.mean(losses[-20:])}

    def run():
        result = gradtx.sweep(train_fn, learning_rate=RATES, weight_decay=DECAYS)
        return result.metrics["loss"]

    return run


def loop_side(xs, ys):
    steps = xs.shape[0]

    @jax.jit
    def start(learning_rate, weight_decay):
        params = init(jax.random.key(0))
        return params, learner(learning_rate, weight_decay, steps).init(params)

    @jax.jit
    def step(params, state, x, y, learning_rate, weight_decay):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, state = learner(learning_rate, weight_decay, steps).update(grads, state, params)
        return gradtx.apply_updates(params, updates), state, loss

    step = jax.jit(step.__wrapped__, donate_argnums=(0, 1))

    def run():
        out = np.zeros((len(RATES), len(DECAYS)))
        for i, lr in enumerate(RATES):
            for j, wd in enumerate(DECAYS):
                lr_, wd_ = jnp.float32(lr), jnp.float32(wd)
                params, state = start(lr_, wd_)
                losses = []
                for t in range(steps):
                    params, state, loss = step(params, state, xs[t], ys[t], lr_, wd_)
                    losses.append(loss)
                out[i, j] = np.mean(jax.device_get(losses[-20:]))
        return out

    return run


def timed(run):
    start = time.perf_counter()
    result = run()
    jax.block_until_ready(result)
    return time.perf_counter() - start, np.asarray(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    xs, ys = load(args.steps)
    sides = {"sweep": sweep_side(xs, ys), "loop": loop_side(xs, ys)}
    first = {name: timed(run) for name, run in sides.items()}  # includes compilation
    np.testing.assert_allclose(first["sweep"][1], first["loop"][1], rtol=2e-3, atol=1e-3)
    times = {name: [] for name in sides}
    for r in range(args.rounds):
        for name in sides if r % 2 == 0 else reversed(sides):
            times[name].append(timed(sides[name])[0])
    ratio = statistics.median(a / b for a, b in zip(times["loop"], times["sweep"], strict=True))
    configs = len(RATES) * len(DECAYS)
    print(f"jax {jax.__version__}, device {jax.devices()[0]}, {jax.device_count()} device(s)")
    print(f"{configs} configurations x {args.steps} steps of AdamW on the digits MLP")
    print(f"{'side':<40}{'first call s':>14}{'median s':>12}")
    print(
        f"{'one gradtx.sweep call (vmap)':<40}{first['sweep'][0]:>14.2f}"
        f"{statistics.median(times['sweep']):>12.2f}"
    )
    print(
        f"{'Python loop of jitted steps':<40}{first['loop'][0]:>14.2f}"
        f"{statistics.median(times['loop']):>12.2f}"
    )
    print(
        f"loop / sweep: {ratio:.1f}x (median of {args.rounds} rounds), "
        f"{first['loop'][0] / first['sweep'][0]:.1f}x on the first call (compilation included)"
    )


if __name__ == "__main__":
    main()
