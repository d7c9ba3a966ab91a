"""Full-batch L-BFGS on scikit-learn's digits: gradtx.lbfgs against scipy's L-BFGS-B.

The objective is an L2-regularised multinomial logistic regression on all 1797
images (64 pixels, 10 classes): convex, with one minimum value and one minimising
W (the biases are unique only up to a common shift, which softmax ignores), so
both optimisers must reach the same point. gradtx runs its loop with
``value_and_grad_from_state``, which reuses the value and gradient the line
search computed at the accepted step; scipy gets the same objective written in
float64 NumPy, with its gradient by hand. Then the same optimiser runs under
``gradtx.make_train_step``, which passes the line search its extras itself.

Run it: ``python examples/lbfgs_digits.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
from sklearn.datasets import load_digits
from threadpoolctl import threadpool_limits

import gradtx
from gradtx.learners.lbfgs import lbfgs
from gradtx.transforms.linesearch import value_and_grad_from_state

L2 = 1e-3  # the weight decay on W: without it the classes are separable and W grows forever
CLASSES = 10


def data() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype(np.float32), y


def init(features: int = 64) -> dict:
    return {"w": jnp.zeros((features, CLASSES)), "b": jnp.zeros(CLASSES)}


def loss_fn(params: dict, batch: tuple) -> jax.Array:
    """Mean cross-entropy plus :math:`\\tfrac{\\lambda}{2}\\lVert W\\rVert^2`."""
    x, y = batch
    logp = jax.nn.log_softmax(x @ params["w"] + params["b"])
    nll = -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))
    return nll + 0.5 * L2 * jnp.sum(params["w"] ** 2)


def run_gradtx(x, y, tol: float = 1e-5, max_iterations: int = 500) -> dict:
    """gradtx.lbfgs until the gradient's norm is below ``tol``."""
    batch = (jnp.asarray(x), jnp.asarray(y))

    def objective(params):
        return loss_fn(params, batch)

    opt = lbfgs()
    value_and_grad = value_and_grad_from_state(objective)

    @jax.jit
    def step(params, state):
        value, grad = value_and_grad(params, state=state)
        updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=objective)
        # The zoom search (the chain's last block) keeps the gradient at the step it accepted.
        return gradtx.apply_updates(params, updates), state, gradtx.tree.norm(state[-1].grad)

    params = init(x.shape[1])
    state = opt.init(params)
    evaluations = 1  # the first iteration evaluates the objective; later ones reuse the search's
    iterations = 0
    while iterations < max_iterations:
        params, state, grad_norm = step(params, state)
        iterations += 1
        evaluations += int(state[-1].info.num_linesearch_steps)  # the search's evaluations
        if grad_norm < tol:
            break
    loss, grad = jax.jit(jax.value_and_grad(objective))(params)
    return {
        "params": params,
        "iterations": iterations,
        "evaluations": evaluations,
        "loss": float(loss),
        "grad_norm": float(gradtx.tree.norm(grad)),
    }


def float64_objective(x, y):
    """The same objective on a flat float64 vector ``[W.ravel(), b]``, with its gradient by hand."""
    x = x.astype(np.float64)
    onehot = np.eye(CLASSES)[y]
    n, features = x.shape

    def fun(theta):
        w, b = theta[: features * CLASSES].reshape(features, CLASSES), theta[features * CLASSES :]
        logits = x @ w + b
        logits -= logits.max(axis=1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        loss = -np.mean(np.sum(onehot * logp, axis=1)) + 0.5 * L2 * np.sum(w**2)
        residual = (np.exp(logp) - onehot) / n  # d loss / d logits
        grad_w = x.T @ residual + L2 * w
        return loss, np.concatenate([grad_w.ravel(), residual.sum(axis=0)])

    return fun


def flat(params: dict) -> np.ndarray:
    return np.concatenate([np.ravel(params["w"]), np.ravel(params["b"])]).astype(np.float64)


def run_scipy(x, y) -> dict:
    """scipy's L-BFGS-B on the same objective, in float64."""
    features = x.shape[1]
    theta0 = np.zeros(features * CLASSES + CLASSES)
    with threadpool_limits(1):  # matrices this small run fastest on one BLAS thread
        result = scipy.optimize.minimize(
            float64_objective(x, y),
            theta0,
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": 1000, "gtol": 1e-6},
        )
    w = result.x[: features * CLASSES].reshape(features, CLASSES)
    return {
        "params": {"w": w, "b": result.x[features * CLASSES :]},
        "iterations": int(result.nit),
        "evaluations": int(result.nfev),
        "loss": float(result.fun),
        "grad_norm": float(np.linalg.norm(result.jac)),
    }


def run_train_step(x, y, steps: int) -> dict:
    """The same optimiser under make_train_step: the whole data set is the batch."""
    batch = (jnp.asarray(x), jnp.asarray(y))
    opt = lbfgs()
    train_step = gradtx.make_train_step(loss_fn, opt)
    params = init(x.shape[1])
    state = opt.init(params)
    for _ in range(steps):
        params, state, metrics = train_step(params, state, batch)
    return {"params": params, "steps": steps, "loss": float(jax.jit(loss_fn)(params, batch))}


def main(verbose: bool = True) -> dict:
    x, y = data()
    ours = run_gradtx(x, y)
    theirs = run_scipy(x, y)
    stepped = run_train_step(x, y, ours["iterations"])
    if verbose:
        print(f"{'':26} {'iterations':>10} {'evaluations':>11} {'final loss':>12} {'|grad|':>9}")
        for name, r in (("gradtx.lbfgs (float32)", ours), ("scipy L-BFGS-B (float64)", theirs)):
            print(
                f"{name:26} {r['iterations']:>10} {r['evaluations']:>11} "
                f"{r['loss']:>12.8f} {r['grad_norm']:>9.1e}"
            )
        gap = np.max(np.abs(np.asarray(ours["params"]["w"]) - theirs["params"]["w"]))
        print(f"largest difference in W between the two minimisers: {gap:.1e}")
        print(
            f"make_train_step(loss_fn, lbfgs()), {stepped['steps']} steps on the full batch: "
            f"loss {stepped['loss']:.8f}"
        )
    return {"gradtx": ours, "scipy": theirs, "train_step": stepped}


if __name__ == "__main__":
    main()
