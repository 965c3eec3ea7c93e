"""The single-chip decode baseline (programs/decode_baseline.py): decode steps of the tiny
transformer on the prefill engine alone, every weight streamed from DRAM, bit-exact with
IntModel.int_decode_step (new K/V rows, logits, the next token) over several steps after the
integer reference's prefill; a synthetic model of other shapes; the compiler's timing model
against the emulator; the cycles against the DRAM bound at 8 and 2 bytes a cycle; preloaded
weights; refusals; and a step of a reduced model on the RTL (Amaranth simulator), cycle for
cycle equal to the emulator."""

import copy
from dataclasses import replace

import numpy as np
import pytest

from mesh.prefill import Op, PrefillConfig
from programs.decode_baseline import (DEFAULT_CONFIG, baseline_cycles, compile_decode_step,
                                      dram_bound, run_decode_step)
from programs.transformer import task
from programs.transformer.model import IntModel


@pytest.fixture(scope="module")
def model():
    return IntModel.load()


def reference_step(model, token, cache):
    """IntModel.int_decode_step on a copy of ``cache``: (logits, trace, new cache)."""
    cache = copy.deepcopy(cache)
    trace = {}
    logits = model.int_decode_step(int(token), cache.length, cache, trace=trace)
    return logits, trace, cache


def check_step(model, run, logits, trace):
    out = run.outputs
    for l in range(len(model.layers)):
        for c in "kv":
            np.testing.assert_array_equal(out[f"l{l}.{c}"], trace[f"l{l}.{c}"].reshape(-1),
                                          err_msg=f"l{l}.{c}")
    np.testing.assert_array_equal(out["logits"], logits)
    assert out["token"] == int(np.argmax(logits))


def decode(model, prompt, steps, config=DEFAULT_CONFIG):
    """Prefill by the integer reference, then ``steps`` decode steps on the emulator, each
    checked against the reference; the engine's token feeds the next step. Returns the runs."""
    logits, cache = model.int_forward_prefill(np.array(task.tokenize(prompt)))
    token = int(np.argmax(logits[-1]))
    runs = []
    for _ in range(steps):
        plan = compile_decode_step(model, token, cache.length, cache, config)
        run = run_decode_step(plan)
        ref, trace, cache = reference_step(model, token, cache)
        check_step(model, run, ref, trace)
        assert run.issue == plan.predicted, "the compiler's timing model is exact"
        assert plan.commands[-1].op == Op.HALT and plan.sbuf is None
        token = run.outputs["token"]
        runs.append((plan, run))
    return runs


RTL_CONFIG = PrefillConfig(n=8, sbuf_rows=1024, psum_rows=256, dram_bytes=1 << 16,
                           commands=2048)


def test_a_step_on_the_rtl_equals_the_emulator():
    """One decode step of a reduced model (random_int_model: d = 32 in 2 heads, d_ff = 64, 2
    layers, 13 tokens, 16 positions; after 9 tokens: ~4,200 cycles, ~10 s in the Amaranth
    simulator; first in this file so that it starts first under xdist) on hdl.PrefillEngine:
    every command issues in the same cycle as on the emulator and as the compiler's timing
    model predicts, and the outputs are the reference's. It has every kind of command of the
    tiny model's step (the GEMVs with 8, 2 and 1 lanes, the transpositions, the attention over
    two key tiles, the mask, the argmax); a whole step of the tiny model (~10,500 cycles) takes
    25 to 35 s there and issues the same way."""
    from programs.mesh_decode.model import random_int_model
    small = random_int_model(32, 2, 64, 2, 13, seed=3, context=16)
    logits, cache = small.int_forward_prefill(np.array([3, 1, 4, 1, 5, 9, 2, 6, 5]))
    token = int(np.argmax(logits[-1]))
    plan = compile_decode_step(small, token, cache.length, cache, RTL_CONFIG)
    assert {plan.lanes[k] for k in ("qkv", "wo", "w2")} == {8, 2, 1}
    emulated = run_decode_step(plan)
    rtl = run_decode_step(plan, backend="rtl")
    assert rtl.issue == emulated.issue == plan.predicted and rtl.cycles == emulated.cycles
    ref, trace, _ = reference_step(small, token, cache)
    check_step(small, rtl, ref, trace)


@pytest.mark.parametrize("prompt", ["7", "12+3=", "123+459=", "999+999=1998"])
def test_decode_steps_equal_the_integer_reference(model, prompt):
    runs = decode(model, prompt, 3)
    plan, run = runs[0]
    assert plan.position == len(task.tokenize(prompt))
    assert sum(run.phase_cycles.values()) == run.cycles
    assert list(run.phase_cycles) == ["start"] + [
        f"l{l}.{p}" for l in range(2) for p in ("norm1", "qkv", "attention", "wo", "norm2",
                                                  "mlp")] + ["final"]


def test_the_first_step_and_the_last_position(model):
    """Position 0 (no cache) and position 63 (the context's last), the mask of a full key
    tile and of a one-key tile."""
    from programs.transformer.model import KVCache
    token = 5
    ref, trace, _ = reference_step(model, token, KVCache())
    plan = compile_decode_step(model, token, 0, None)
    check_step(model, run_decode_step(plan), ref, trace)
    tokens = np.random.default_rng(1).integers(0, 13, size=63)
    _, cache = model.int_forward_prefill(tokens)
    ref, trace, _ = reference_step(model, token, cache)
    check_step(model, run_decode_step(compile_decode_step(model, token, 63, cache)), ref,
               trace)


def test_a_synthetic_model_of_other_shapes(model):
    """d = 32 in 2 heads, d_ff = 96, 3 layers, 11 tokens, 24 positions: other lane choices
    (q|k|v of 96 outputs, Wo of 32, W1 of 96), bit-exact over two steps."""
    from programs.mesh_decode.model import random_int_model
    synth = random_int_model(32, 2, 96, 3, 11, seed=4, context=24)
    logits, cache = synth.int_forward_prefill(np.array([1, 5, 9, 2, 7]))
    token = int(np.argmax(logits[-1]))
    for _ in range(2):
        plan = compile_decode_step(synth, token, cache.length, cache)
        run = run_decode_step(plan)
        ref, trace, cache = reference_step(synth, token, cache)
        check_step(synth, run, ref, trace)
        token = run.outputs["token"]
    assert plan.lanes["wo"] < 8 and plan.lanes["qkv"] == 8


def test_cycles_follow_the_dram_bound(model):
    """At 2 bytes a cycle (and 1, 4) the step is DRAM-bound: within 5% of ceil((weight + KV
    bytes) / bandwidth) (the rest: the constants, tables and output stores the DMA also moves,
    the first request's latency and the last step's argmax). At 8 bytes a cycle = n the array
    streams exactly as fast as the DRAM, so the serial vector work and the loader-bound
    attention tiles cannot hide: the step lasts as long as its compute alone (weights
    preloaded in SBUF), within 3%, some 27% above the DRAM bound."""
    logits, cache = model.int_forward_prefill(np.array(task.tokenize("123+459=")))
    token = int(np.argmax(logits[-1]))
    ratios, runs = {}, {}
    for bw in (8, 4, 2, 1):
        config = replace(DEFAULT_CONFIG, dram_bandwidth=bw)
        plan = compile_decode_step(model, token, cache.length, cache, config)
        runs[bw] = run = run_decode_step(plan)
        assert plan.dram_bound == dram_bound(model, cache.length, bw) == run.bound
        ratios[bw] = run.ratio
    assert max(ratios[4], ratios[2], ratios[1]) < 1.05, ratios
    assert ratios[8] < 1.30, ratios
    pre = compile_decode_step(model, token, cache.length, cache,
                              replace(DEFAULT_CONFIG, sbuf_rows=16384), weights_in="sbuf")
    compute = run_decode_step(pre)
    assert compute.outputs["token"] == runs[8].outputs["token"]
    assert sum(c.op == Op.DMA for c in pre.commands) == 6     # stores: K, V, logits, token
    assert compute.cycles <= runs[8].cycles < 1.03 * compute.cycles


def test_baseline_cycles(model):
    """The sweep helper: the timing model's cycles (the emulator agrees with ``emulate``), the
    compute-only cycles (commands only, every input in SBUF) equal to a preloaded run's, and a
    synthetic model 4x wider whose step at 8 bytes a cycle comes within 10% of its bound."""
    config = replace(DEFAULT_CONFIG, dram_bandwidth=2)
    r = baseline_cycles(model, 20, config, emulate=True)
    assert r["bound"] == dram_bound(model, 20, 2) and r["ratio"] == r["cycles"] / r["bound"]
    assert 1 < r["ratio"] < 1.05 and r["cycles"] < 1.01 * r["dma_bound"]
    assert r["weight_bytes"] == 2 * (4 * 64 * 64 + 2 * 64 * 128) + 64 * 13
    assert r["kv_bytes"] == 2 * 2 * 20 * 64
    logits, cache = model.int_forward_prefill(np.arange(20) % 13)
    pre = compile_decode_step(model, 3, 20, cache, replace(config, sbuf_rows=16384),
                              weights_in="sbuf")
    run = run_decode_step(pre)
    assert run.cycles == pre.cycles == r["compute_cycles"] < r["cycles"] / 2
    ref, trace, _ = reference_step(model, 3, cache)
    check_step(model, run, ref, trace)

    from programs.mesh_decode.model import random_int_model
    wide = random_int_model(256, 16, 1024, 2, 13, seed=1)
    r = baseline_cycles(wide, 30)
    assert r["lanes"] == {"qkv": 8, "wo": 8, "w1": 8, "w2": 8, "out": 1}
    assert r["bound"] == dram_bound(wide, 30, 8) and 1 < r["ratio"] < 1.05
    assert r["compute_cycles"] < r["cycles"]


def test_refusals(model):
    logits, cache = model.int_forward_prefill(np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="does not follow the cache's 3 tokens"):
        compile_decode_step(model, 1, 4, cache)
    with pytest.raises(ValueError, match="token must be an id from 0 to 12"):
        compile_decode_step(model, 13, 3, cache)
    with pytest.raises(ValueError, match="outside the context"):
        compile_decode_step(model, 1, 64, cache)
    with pytest.raises(ValueError, match=r"needs \d+ SBUF rows .*the engine has 512"):
        compile_decode_step(model, 1, 3, cache, replace(DEFAULT_CONFIG, sbuf_rows=512))
    with pytest.raises(ValueError, match=r"needs \d+ DRAM bytes"):
        compile_decode_step(model, 1, 3, cache, replace(DEFAULT_CONFIG, dram_bytes=1 << 16))
    with pytest.raises(ValueError, match="weights_in must be"):
        compile_decode_step(model, 1, 3, cache, weights_in="host")
