"""``Trainer``: MXNet's ``gluon.Trainer`` comforts (step, fit, learning rate, save) in JAX."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from gradtx import checks
from gradtx.core import GradientTransformation
from gradtx.hyperparams import get_hyperparams, set_hyperparams
from gradtx.state_dict import load_npz, save_npz
from gradtx.training import sharding
from gradtx.training.evaluation import eval_params, has_eval_params
from gradtx.training.step import combine, make_train_step, split, split_checked

Batches = Iterable[Any] | Callable[[int], Iterable[Any]]


def _to_host(x: Any) -> Any:
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return multihost_utils.process_allgather(x, tiled=True)
    return x


class Trainer:
    """A training loop you can step by hand or hand over: ``step(batch)``, ``fit(batches)``.

    The Trainer owns a copy of the params and the optimizer state and runs one
    jitted :func:`make_train_step` (the caller's arrays are never donated).
    Every step's metrics (loss, gradient and update norms, the optimizer's
    injected hyperparameters) go to :attr:`history`.

    The params may be a model whose leaves are not all arrays (an equinox
    ``Module`` with its activation functions, sizes and flags): as in
    :func:`make_train_step`, its JAX and NumPy array leaves are trained and
    everything else is static. The optimizer sees the array leaves alone (None
    elsewhere, as ``eqx.filter(model, eqx.is_array)`` gives), so its state is
    the one an equinox loop makes; :attr:`params`, :attr:`eval_params` and
    ``evaluate`` give the whole model, and checkpoints hold its arrays.

    ``learning_rate`` and ``set_learning_rate`` work like MXNet's
    ``gluon.Trainer`` when the learning rate lives in the optimizer's state,
    i.e. the optimizer was built with :func:`gradtx.inject_hyperparams`, e.g.
    ``inject_hyperparams(gradtx.sgd)(learning_rate=0.1)``. Setting it never
    recompiles the step.

    With a ``mesh`` the Trainer trains data-parallel: params are placed by
    ``param_specs`` (replicated by default, or split over a ``model`` axis),
    the optimizer state is made by a jitted ``init`` on the mesh so that each
    moment is sharded like its param, and every batch is split over
    ``data_axis`` (see :func:`make_train_step`).

    Args:
      loss_fn: ``loss_fn(params, batch) -> loss`` (or ``(loss, aux)`` with ``has_aux``).
      optimizer: a gradtx or optax gradient transformation.
      params: the initial parameters (their arrays are copied), or a model holding them.
      has_aux: whether ``loss_fn`` returns ``(loss, aux)``.
      progress: show a tqdm progress bar in :meth:`fit`: ``None`` shows it
        only when standard error is a terminal, ``True`` forces it, ``False``
        hides it.
      mesh: a ``jax.sharding.Mesh`` to train on, or None for one device.
      param_specs: with a mesh, how to split the params: None (replicated), one
        ``PartitionSpec`` for all, a tree of them shaped like the params, or a
        function ``(path, leaf) -> PartitionSpec``.
      data_axis: with a mesh, the axis the batches are split over.
      fused: as in :func:`make_train_step`: None (the default) runs each update
        through :func:`gradtx.fused_update` on one device (one pass over memory
        on CPU for learners with a kernel, the same numbers and history), False
        never does. Without kernels (no compiler, nothing cached) it trains
        through the plain path, with one :class:`gradtx.FusedFallbackWarning`.
      compression: with a mesh, exchange the gradients compressed, as in
        :func:`make_train_step`: ``"bf16"``, ``"fp16"``, ``"int8"``, ``"2bit"``,
        ``"1bit"``, ``"powersgd"`` (:func:`gradtx.powersgd_mean`), or MXNet's
        ``compression_params`` dict such as ``{"type": "2bit", "threshold": 0.5}``
        (``{"type": "powersgd", "rank": 2}``). :attr:`opt_state` is then
        ``(residuals, optimizer state)``; :meth:`save` and :meth:`load` keep the
        error-feedback residuals, and :attr:`hyperparams` reads the optimizer's.
    """

    def __init__(
        self,
        loss_fn: Callable[..., Any],
        optimizer: GradientTransformation,
        params: Any,
        *,
        has_aux: bool = False,
        progress: bool | None = None,
        mesh: Mesh | None = None,
        param_specs: Any = None,
        data_axis: str = "data",
        fused: bool | None = None,
        compression: str | Mapping[str, Any] | None = None,
    ):
        self._train_step = make_train_step(
            loss_fn,
            optimizer,
            has_aux=has_aux,
            mesh=mesh,
            data_axis=data_axis,
            fused=fused,
            compression=compression,
        )
        self.optimizer = optimizer
        self.mesh = mesh
        arrays, static = split_checked("Trainer", params)
        if mesh is None:
            if param_specs is not None:
                raise ValueError("Trainer: param_specs place params on a mesh; pass mesh= too")
            arrays = jax.tree.map(jnp.array, arrays)  # a copy: the step donates its buffers
            self.opt_state = optimizer.init(arrays)
        else:
            placement = sharding.param_shardings("Trainer", mesh, arrays, param_specs)
            placed = sharding.place(arrays, placement)
            arrays = jax.tree.map(lambda x: x.copy(), placed)  # never donate the caller's
            self.opt_state = self._train_step.init(arrays)
        self.params = combine(arrays, static)
        self.progress = progress
        self._eval_params: Callable[[Any, Any], Any] | None = None
        self._steps: list[dict] = []
        self.epochs: list[dict[str, float]] = []

    # -- stepping -----------------------------------------------------------------------------

    def step(self, batch: Any) -> dict:
        """One update on ``batch``; returns that step's metrics (device arrays)."""
        self.params, self.opt_state, metrics = self._train_step(self.params, self.opt_state, batch)
        self._steps.append(metrics)
        return metrics

    def fit(
        self,
        batches: Batches,
        epochs: int = 1,
        eval_fn: Callable[[Any], Any] | None = None,
    ) -> list[dict[str, float]]:
        """Train for ``epochs`` passes over ``batches``; returns one summary per epoch.

        Each summary holds ``epoch`` (from 1), ``steps``, ``loss`` (the mean
        training loss over the epoch), ``learning_rate`` (that of the epoch's
        last update) when the optimizer keeps one, and what ``eval_fn(params)``
        returns (a dict of numbers, or one number stored as ``eval``). Summaries also accumulate in
        :attr:`epochs`.

        Args:
          batches: a re-iterable collection of batches (a list, a data loader),
            or a function ``epoch -> iterable`` (epoch from 0) for a fresh
            order each epoch.
          epochs: passes over the data, at least 1.
          eval_fn: called with the params to evaluate (:attr:`eval_params`) after
            each epoch.
        """
        epochs = checks.check_length("Trainer.fit", "epochs", epochs, wording="positive")
        if isinstance(batches, Iterator) and epochs > 1:
            raise ValueError(
                f"Trainer.fit: batches is a one-shot iterator, which would be empty after the "
                f"first of {epochs} epochs; pass a list, or a function epoch -> iterable"
            )
        summaries = []
        for epoch in range(epochs):
            source = batches(epoch) if callable(batches) else batches
            losses = [self.step(batch)["loss"] for batch in self._progress(source, epoch, epochs)]
            if not losses:
                raise ValueError(f"Trainer.fit: batches yielded no batch in epoch {epoch + 1}")
            summary: dict[str, float] = {"epoch": epoch + 1, "steps": len(losses)}
            summary["loss"] = float(np.mean(jax.device_get(losses)))
            rate = self._learning_rates()
            if len(rate) == 1:
                summary["learning_rate"] = float(next(iter(rate.values())))
            if eval_fn is not None:
                result = self.evaluate(eval_fn)
                if isinstance(result, dict):
                    summary.update({k: float(v) for k, v in result.items()})
                else:
                    summary["eval"] = float(result)
            self.epochs.append(summary)
            summaries.append(summary)
        return summaries

    @property
    def eval_params(self) -> Any:
        """The params to evaluate and export with: :func:`gradtx.eval_params` of the state.

        For a schedule-free learner the average :math:`x_t` it has been converging,
        not the point :attr:`params` where it takes gradients; :attr:`params` otherwise.
        """
        if not has_eval_params(self.opt_state):
            return self.params
        if self._eval_params is None:
            self._eval_params = jax.jit(eval_params)
        arrays, static = split(self.params)
        return combine(self._eval_params(self.opt_state, arrays), static)

    def evaluate(self, fn: Callable[[Any], Any]) -> Any:
        """``fn(self.eval_params)``: evaluate the model with the params it should be used with."""
        return fn(self.eval_params)

    def _progress(self, source: Iterable, epoch: int, epochs: int) -> Iterable:
        show = sys.stderr.isatty() if self.progress is None else self.progress
        if not show:
            yield from source
            return
        try:
            from tqdm.auto import tqdm
        except ImportError as error:
            raise ImportError(
                "Trainer(progress=True) needs tqdm: pip install tqdm (or gradtx[examples])"
            ) from error
        total = len(cast(Sized, source)) if hasattr(source, "__len__") else None
        desc = f"epoch {epoch + 1}/{epochs}"
        batches, done = iter(source), 0
        if not self._steps:
            # The first step compiles: a phase of its own, outside the bar's rate and estimate.
            for batch in batches:
                with tqdm(total=total, desc=f"{desc}: compiling", unit="step", leave=False):
                    yield batch  # fit steps on it before asking for the next
                done = 1
                break
        yield from tqdm(batches, total=total, initial=done, desc=desc, unit="step")

    # -- metrics and hyperparameters -----------------------------------------------------------

    @property
    def history(self) -> dict[str, np.ndarray]:
        """Every step's metrics so far, as host arrays with one row per step."""
        if not self._steps:
            return {}
        steps = jax.device_get(self._steps)
        return jax.tree.map(lambda *xs: np.stack(xs), *steps)

    @property
    def hyperparams(self) -> dict[str, jax.Array]:
        """The optimizer's injected hyperparameters by path, as :func:`gradtx.get_hyperparams`."""
        return get_hyperparams(self.opt_state)

    def _learning_rates(self) -> dict[str, jax.Array]:
        return {
            k: v
            for k, v in self.hyperparams.items()
            if k == "learning_rate" or k.endswith("/learning_rate")
        }

    @property
    def learning_rate(self) -> float:
        """The learning rate in the optimizer's state.

        A constant or set rate is the one the next update uses; a scheduled
        rate is the one the latest update used (the first update's before any).
        """
        rates = self._learning_rates()
        if not rates:
            raise ValueError(
                "Trainer.learning_rate: the optimizer keeps no learning rate in its state; build "
                "it with gradtx.inject_hyperparams, e.g. "
                "gradtx.inject_hyperparams(gradtx.sgd)(learning_rate=0.1)"
            )
        if len(rates) > 1:
            raise ValueError(
                f"Trainer.learning_rate: the optimizer has several learning rates "
                f"{sorted(rates)}; read them with Trainer.hyperparams"
            )
        return float(next(iter(rates.values())))

    def set_learning_rate(self, learning_rate: float) -> None:
        """Use ``learning_rate`` from the next update on (every group's, if there are several)."""
        self.learning_rate  # noqa: B018  (raises the explanation when there is none)
        self.opt_state = set_hyperparams(self.opt_state, learning_rate=learning_rate)

    # -- checkpoints ---------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write the params' arrays and the optimizer's :func:`gradtx.state_dict` to an ``.npz``.

        For a learner that evaluates elsewhere than it trains (schedule-free), the
        file also holds :attr:`eval_params` as ``eval_params/<key path>`` entries,
        the params to use for inference; :meth:`load` recomputes them from the
        params and the state. The file is written next to ``path`` and renamed into place, so a
        failed save leaves any earlier file intact. In a multi-process run every
        process must call it (arrays split across processes are gathered) and
        process 0 writes the file.
        """
        evaluated = split(self.eval_params)[0] if has_eval_params(self.opt_state) else None
        host = jax.tree.map(_to_host, (split(self.params)[0], self.opt_state, evaluated))
        if jax.process_index() == 0:
            save_npz(path, *host[:2], eval_params=host[2])

    def load(self, path: str | os.PathLike) -> None:
        """Restore params and optimizer state saved by :meth:`save`; training resumes exactly.

        Every entry is checked against this Trainer's params and state (names,
        shapes, dtypes) before anything is replaced.

        Raises:
          ValueError: naming the first entry that is missing, unexpected or misshapen.
        """
        arrays, static = split(self.params)
        params, opt_state = load_npz(path, arrays, self.opt_state, who="Trainer.load")
        if self.mesh is not None:  # back onto the mesh with the shardings the arrays have now
            current = sharding.shardings_of((arrays, self.opt_state), self.mesh)
            params, opt_state = sharding.place((params, opt_state), current)
        self.params, self.opt_state = combine(params, static), opt_state
