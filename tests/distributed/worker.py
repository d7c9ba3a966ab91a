"""One process of a data-parallel run: ``python worker.py ID PROCESSES PORT OUT [SCHEME]``.

With NUM_PROCESSES > 1 it joins a ``jax.distributed`` job on 127.0.0.1:PORT
(CPU collectives over gloo) with 4 local devices; with 1 it runs alone on 8.
Either way the mesh has 8 devices on a ``data`` axis, each process feeds its
own slice of every batch, and the Trainer saves the final params and state to
OUT (process 0 writes). With SCHEME the gradients are exchanged compressed
(``Trainer(compression=SCHEME)``).
"""

from __future__ import annotations

import os
import sys

process_id, num_processes, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
compression = sys.argv[5] if len(sys.argv) > 5 else None
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={8 // num_processes}"

import jax  # noqa: E402

if num_processes > 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}",
        num_processes=num_processes,
        process_id=process_id,
        initialization_timeout=60,
    )

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dist_model import batches, init_params, loss_fn  # noqa: E402

import gradtx  # noqa: E402

mesh = jax.make_mesh((8,), ("data",))
trainer = gradtx.Trainer(
    loss_fn,
    gradtx.chain(gradtx.clip_by_global_norm(1.0), gradtx.adamw(1e-2, weight_decay=1e-2)),
    init_params(),
    progress=False,
    mesh=mesh,
    compression=compression,
)
per_process = 32 // num_processes
mine = slice(process_id * per_process, (process_id + 1) * per_process)
local = [(x[mine], y[mine]) for x, y in batches()]
summaries = trainer.fit(local)
trainer.save(out)
print(
    f"process {process_id}/{num_processes}: {jax.device_count()} devices, "
    f"{jax.local_device_count()} local, loss {summaries[-1]['loss']:.6f}",
    flush=True,
)
if num_processes > 1:
    jax.distributed.shutdown()
