"""optax's ``optax.tree_utils`` name for :mod:`gradtx.tree`: the same functions.

``optax.tree_utils.tree_get(state, "learning_rate")`` ports as
``gradtx.tree_utils.tree_get(...)``, also through ``import gradtx.tree_utils``.
"""

from gradtx.tree import *  # noqa: F403
from gradtx.tree import __all__  # noqa: F401
