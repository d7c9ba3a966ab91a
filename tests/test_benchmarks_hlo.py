"""The benchmark's HLO reader: kernel counts and bytes per parameter (no timing here)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

import gradtx
from benchmarks.hlo import memory_traffic
from benchmarks.timing import JaxStep

N = 100_000


def test_one_streaming_kernel_moves_eight_bytes_per_element():
    compiled = jax.jit(lambda x: x * 2.0, donate_argnums=0).lower(jnp.zeros(N)).compile()
    assert memory_traffic(compiled.as_text(), N) == (1, 8.0)


def test_bfloat16_state_moves_fewer_bytes_than_float32():
    params = {"w": jnp.zeros(N)}
    _, f32 = memory_traffic(
        JaxStep(gradtx.adam(1e-3), gradtx.apply_updates, params, params).compiled.as_text(), N
    )
    bf16_adam = gradtx.adam(1e-3, state_dtype=jnp.bfloat16)
    _, bf16 = memory_traffic(
        JaxStep(bf16_adam, gradtx.apply_updates, params, params).compiled.as_text(), N
    )
    # Each moment is read and written by its own kernel and read again by the parameter
    # kernel: three touches of 2 bytes instead of 4, for two moments.
    assert round(f32 - bf16) == 3 * 2 * 2
