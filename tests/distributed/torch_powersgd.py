"""torch's own ``powerSGD_hook`` run for N simulated DDP ranks, one thread each.

The hook is torch's code unchanged; what DDP gives it is stood in for: a
bucket (one flat buffer with each gradient a view of it, complex gradients as
their real views, as DDP's reducer lays them out), and ``dist.all_reduce``, a
sum over the threads in rank order behind a barrier. torch's generator is
global, so the hook's draws of Q (inside ``torch.random.fork_rng``) take a lock.
"""

from __future__ import annotations

import contextlib
import threading
from collections import defaultdict

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as hook


class _Group:
    def __init__(self, n: int):
        self.n = n
        self.barrier = threading.Barrier(n)
        self.slots: list = [None] * n
        self.local = threading.local()

    def size(self) -> int:
        return self.n


class _Done:
    def __init__(self, tensor):
        self.future = torch.futures.Future()
        self.future.set_result([tensor])

    def get_future(self):
        return self.future


class _Bucket:
    def __init__(self, grads: list[torch.Tensor]):
        self._buffer = torch.cat([g.reshape(-1) for g in grads])
        self._views, offset = [], 0
        for g in grads:
            self._views.append(self._buffer[offset : offset + g.numel()].view(g.shape))
            offset += g.numel()

    def buffer(self):
        return self._buffer

    def index(self):
        return 0

    def gradients(self):
        return self._views

    def is_last(self):
        return True


def _real(x: np.ndarray) -> torch.Tensor:
    # A 0-d gradient as its 1-element vector: torch's hook cannot view a scalar as a
    # matrix (IndexError), gradtx sends it whole, as the hook sends a vector.
    t = torch.from_numpy(np.array(x, ndmin=1))
    return torch.view_as_real(t) if t.is_complex() else t


def _back(flat: np.ndarray, like: np.ndarray) -> np.ndarray:
    if np.iscomplexobj(like):
        pairs = flat.reshape(*like.shape, 2)
        return (pairs[..., 0] + 1j * pairs[..., 1]).astype(like.dtype)
    return flat.reshape(like.shape)


def starting_qs(leaves: list[np.ndarray], rank: int, min_rate: float, seed: int) -> dict:
    """torch's first Q of each compressed leaf (by index): its seed, draw order and shapes."""
    shapes = {}
    for i, x in enumerate(leaves):
        t = _real(x)
        n, m = t.shape[0], t.numel() // t.shape[0]
        r = min(n, m, rank)
        if (n + m) * r * min_rate < n * m:
            shapes[i] = (m, r)
    by_shape = defaultdict(list)  # the hook draws them grouped by matrix shape
    for i in shapes:
        t = _real(leaves[i])
        by_shape[(t.shape[0], t.numel() // t.shape[0])].append(i)
    rng = np.random.RandomState(seed)
    out = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(rng.randint(1_000_000_000))
        for group in by_shape.values():
            for i in group:
                out[i] = torch.randn(1, *shapes[i]).numpy()[0]
    return out


def run_hook(grads: list[list[list[np.ndarray]]], **state_kwargs) -> list[list[np.ndarray]]:
    """``grads[step][rank]``: a list of leaves. Returns the hook's mean leaves per step."""
    n = len(grads[0])
    group = _Group(n)
    results: list[list] = [[None] * n for _ in grads]
    failures: list[BaseException] = []
    lock = threading.Lock()
    original_fork, original_all_reduce = torch.random.fork_rng, dist.all_reduce

    @contextlib.contextmanager
    def fork_rng(*args, **kwargs):
        with lock, original_fork(*args, **kwargs):
            yield

    def all_reduce(tensor, group=None, async_op=False):
        rank = group.local.rank
        group.slots[rank] = tensor.clone()
        group.barrier.wait()
        total = group.slots[0].clone()
        for other in group.slots[1:]:
            total += other
        group.barrier.wait()
        tensor.copy_(total)
        return _Done(tensor)

    def rank_main(rank: int) -> None:
        group.local.rank = rank
        try:
            state = hook.PowerSGDState(group, **state_kwargs)
            for k, step in enumerate(grads):
                leaves = step[rank]
                bucket = _Bucket([_real(x).clone() for x in leaves])
                flat = hook.powerSGD_hook(state, bucket).wait().numpy()
                out, offset = [], 0
                for x in leaves:
                    size = _real(x).numel()
                    out.append(_back(flat[offset : offset + size].copy(), x))
                    offset += size
                results[k][rank] = out
        except BaseException as error:  # noqa: BLE001 - reported by the caller
            failures.append(error)
            group.barrier.abort()

    torch.random.fork_rng, dist.all_reduce = fork_rng, all_reduce
    try:
        threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        torch.random.fork_rng, dist.all_reduce = original_fork, original_all_reduce
    if failures:
        raise failures[0]
    for k in range(len(grads)):  # every rank gets the same mean
        for rank in range(1, n):
            for a, b in zip(results[k][0], results[k][rank], strict=True):
                np.testing.assert_array_equal(a, b)
    return [results[k][0] for k in range(len(grads))]
