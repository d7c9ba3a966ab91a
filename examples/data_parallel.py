"""Data-parallel training of the digits MLP on 8 CPU devices, in one process or in two.

    python examples/data_parallel.py                  # one process, 8 host devices
    python examples/data_parallel.py --processes 2    # two local processes x 4 devices

The mesh is ``data`` x ``model`` (4 x 2): every batch of 64 is split over the
4 data groups, and the hidden layer's weights over the 2 model devices; the
Adam moments follow their params' sharding. With two processes each feeds its
own half of every batch and the devices talk over gloo, as separate hosts
would. At the end the script compares the optimizer state's memory per device
with ZeRO-style sharding (the moments also split over ``data``).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading

DEVICES = 8


def _relay(stream) -> None:
    for line in stream:
        if not line.startswith("[Gloo]"):
            print(line, end="", flush=True)


def spawn(processes: int, steps: int) -> int:
    """Start this script once per process on a free local port; wait for all of them."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, os.path.abspath(__file__), "--steps", str(steps)]
    procs = [
        subprocess.Popen(
            [*command, "--processes", str(processes), "--process-id", str(i), "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(processes)
    ]
    # gloo reports every connection it makes ("[Gloo] Rank 0 is connected to 1 peer
    # ranks..."), 16 lines for two processes; pass on only what the example prints.
    readers = [threading.Thread(target=_relay, args=(p.stdout,)) for p in procs]
    for reader in readers:
        reader.start()
    try:
        codes = [p.wait(timeout=600) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for reader in readers:
            reader.join()
    return max(codes)


def per_device_kib(tree) -> float:
    import jax

    return sum(x.addressable_shards[0].data.nbytes for x in jax.tree.leaves(tree)) / 1024


def train(steps: int, processes: int, process_id: int, port: int) -> None:
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={DEVICES // processes}"
    import jax

    # --8<-- [start:processes]
    if processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(f"127.0.0.1:{port}", processes, process_id)
    from digits_data import accuracy, epoch_batches, init_mlp, loss_fn, split
    from jax.sharding import AxisType
    from jax.sharding import PartitionSpec as P

    import gradtx

    # Auto axes: XLA places the model's intermediates, so the model code needs no change.
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
    lead = process_id == 0
    if lead:
        print(
            f"mesh {dict(mesh.shape)} over {jax.device_count()} devices, "
            f"{jax.process_count()} process(es) with {jax.local_device_count()} each"
        )
    x_train, x_test, y_train, y_test = split()
    params = init_mlp(jax.random.key(0), sizes=(64, 128, 10))
    specs = [{"w": P(None, "model"), "b": P("model")}, {"w": P("model", None), "b": P()}]
    trainer = gradtx.Trainer(
        loss_fn, gradtx.adam(3e-3), params, progress=False, mesh=mesh, param_specs=specs
    )
    batches = [
        b for epoch in range(steps // 20 + 1) for b in epoch_batches(x_train, y_train, 64, epoch)
    ]
    share = 64 // processes  # each process feeds its own slice of every global batch
    mine = slice(process_id * share, (process_id + 1) * share)
    for step, (x, y) in enumerate(batches[:steps]):
        metrics = trainer.step((x[mine], y[mine]))
        if lead and (step < 5 or (step + 1) % 10 == 0):
            loss, grad_norm = float(metrics["loss"]), float(metrics["grad_norm"])
            print(f"step {step + 1:>4}  loss {loss:.4f}  grad norm {grad_norm:.4f}")
    # --8<-- [end:processes]
    w1 = trainer.params[0]["w"]
    mu = trainer.opt_state[0].mu[0]["w"]
    if lead:
        print(f"params[0]['w'] {w1.sharding.spec}, its Adam moment {mu.sharding.spec}")
    from jax.experimental import multihost_utils

    whole = multihost_utils.process_allgather(trainer.params, tiled=True)  # every process calls
    if lead:
        print(f"test accuracy {accuracy(whole, x_test, y_test):.4f}")
    replicated = per_device_kib(trainer.opt_state)
    zero = jax.device_put(trainer.opt_state, gradtx.zero_shardings(trainer.opt_state, mesh))
    if lead:
        print(
            f"optimizer state per device: {replicated:.1f} KiB sharded like the params, "
            f"{per_device_kib(zero):.1f} KiB with ZeRO over 'data' "
            f"({replicated / per_device_kib(zero):.1f}x less)"
        )
    if processes > 1:
        jax.distributed.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--processes", type=int, default=1, choices=(1, 2))
    parser.add_argument("--process-id", type=int, default=None)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    if args.processes > 1 and args.process_id is None:
        sys.exit(spawn(args.processes, args.steps))
    train(args.steps, args.processes, args.process_id or 0, args.port)
