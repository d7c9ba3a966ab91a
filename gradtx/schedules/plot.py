"""Plot a schedule (needs matplotlib: the ``plot`` extra)."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from gradtx.core import Schedule


def plot_schedule(schedule: Schedule, steps: int, ax: Any = None, **plot_kwargs: Any) -> Any:
    """Plot ``schedule`` at counts ``0 .. steps - 1`` (one vectorised call) and return the axes.

    Args:
      schedule: any schedule.
      steps: how many counts to show.
      ax: a matplotlib axes; a new figure's when None.
      **plot_kwargs: passed to ``ax.plot``.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots()
    counts = np.arange(steps)
    ax.plot(counts, np.asarray(schedule(jnp.asarray(counts, jnp.int32))), **plot_kwargs)
    ax.set_xlabel("step count")
    ax.set_ylabel("value")
    return ax
