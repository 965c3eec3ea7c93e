"""The tiny transformer's prefill compiled onto the prefill engine (programs/prefill_compiler.py):
the emulator's outputs (every layer's K and V, the last hidden state, the logits, the first
generated token) equal the integer reference bit for bit for prompts of 1 to 12 tokens; the
argmax's ties and padded columns; weights preloaded in SBUF; the layout; refusals; and one
full prefill on the RTL (Amaranth simulator), cycle for cycle equal to the emulator."""

import copy
from dataclasses import replace

import numpy as np
import pytest

from mesh.prefill import Op, PrefillConfig
from programs.prefill_compiler import (DEFAULT_CONFIG, TAG_OUT, compile_prefill,
                                       run_prefill)
from programs.transformer import task
from programs.transformer.model import IntModel


@pytest.fixture(scope="module")
def model():
    return IntModel.load()


def check_outputs(model, tokens, run):
    """The run's outputs against IntModel.int_forward_prefill's trace."""
    trace = {}
    logits, _ = model.int_forward_prefill(tokens, trace=trace)
    out = run.outputs
    for l in range(model.config["n_layers"]):
        for c in "kv":
            np.testing.assert_array_equal(out[f"l{l}.{c}"], trace[f"l{l}.{c}"][0],
                                          err_msg=f"l{l}.{c}")
    np.testing.assert_array_equal(out["x"], trace[f"l{model.config['n_layers'] - 1}.x2"][0, -1])
    np.testing.assert_array_equal(out["logits"], logits[-1])
    assert out["token"] == int(np.argmax(logits[-1]))


PROMPTS = ["7", "12", "7+86=", "123+459=", "999+999=8", "123+459=2851"]     # 1 .. 12 tokens


@pytest.mark.parametrize("prompt", PROMPTS)
def test_prefill_equals_the_integer_reference(model, prompt):
    tokens = task.tokenize(prompt)
    plan = compile_prefill(model, tokens)
    run = run_prefill(plan)
    check_outputs(model, tokens, run)
    if prompt.endswith("="):
        assert run.outputs["token"] == model.generate_int(prompt, max_new=1)[0]
    assert plan.commands[-1].op == Op.HALT and plan.sbuf is None
    assert sum(run.phase_cycles.values()) == run.cycles
    assert list(run.phase_cycles) == ["start"] + [
        f"l{l}.{p}" for l in range(2)
        for p in ("norm1", "qkv", "attention", "wo", "norm2", "mlp")] + ["final"]


def test_a_prompt_as_a_string_and_random_tokens(model):
    tokens = np.random.default_rng(3).integers(0, 13, size=10)
    check_outputs(model, tokens.tolist(), run_prefill(compile_prefill(model, tokens)))
    assert compile_prefill(model, "7+86=").tokens == task.tokenize("7+86=")


def with_wout(model, wout):
    other = copy.copy(model)
    other.wout = np.asarray(wout, dtype=np.int64)
    return other


def test_argmax_ties_go_to_the_lowest_index_and_padding_never_wins(model):
    """Output matrices built from the real one's best column j (logit L_j): every column -w_j
    (all logits -L_j < 0, below the padded columns' 0: the pad bias must keep them out; a
    13-way tie: token 0), the same with column 12 = w_j (the maximum in the padded tile), and
    column 3 = w_j next to j (a tie: the lower index)."""
    tokens = task.tokenize("55+5=")
    logits, _ = model.int_forward_prefill(tokens)
    j = int(np.argmax(logits[-1]))
    assert logits[-1, j] > 0 and j != 3
    w = model.wout[:, j]
    negative = np.repeat(-w[:, None], 13, axis=1)
    last = negative.copy()
    last[:, 12] = w
    tie = model.wout.copy()
    tie[:, 3] = w
    for wout, expected in [(negative, 0), (last, 12), (tie, min(3, j))]:
        other = with_wout(model, wout)
        run = run_prefill(compile_prefill(other, tokens))
        check_outputs(other, tokens, run)
        assert run.outputs["token"] == expected


def test_weights_preloaded_in_sbuf_give_the_same_outputs(model):
    tokens = task.tokenize("123+459=")
    streamed = run_prefill(compile_prefill(model, tokens))
    plan = compile_prefill(model, tokens, replace(DEFAULT_CONFIG, sbuf_rows=16384),
                           weights_in="sbuf")
    preloaded = run_prefill(plan)
    assert plan.sbuf is not None
    assert not any(c.op == Op.DMA and c.tag not in (0, 13, TAG_OUT) for c in plan.commands)
    for name, value in streamed.outputs.items():
        np.testing.assert_array_equal(preloaded.outputs[name], value)
    # streaming the weights at 8 bytes a cycle costs little more than having them on chip
    assert preloaded.cycles < streamed.cycles < preloaded.cycles * 1.02


def test_layout(model):
    a = compile_prefill(model, "7+86=")
    b = compile_prefill(model, "123+459=2851")
    # the image is the model's: the prompt is in the commands
    assert a.dram_map == b.dram_map
    first_output = min(addr for addr, _, _ in a.layout.values())
    assert a.dram[:first_output] == b.dram[:first_output]
    assert set(a.layout) == {"l0.k", "l0.v", "l1.k", "l1.v", "x", "logits", "token"}
    assert a.layout["l0.k"][1] == (5, 64) and b.layout["l1.v"][1] == (12, 64)
    ends = sorted((addr, addr + int(np.prod(shape or (1,))) * np.dtype(dtype).itemsize)
                  for addr, shape, dtype in b.layout.values())
    assert all(e <= s for (_, e), (s, _) in zip(ends, ends[1:]))
    assert max(addr + size for addr, size in b.dram_map.values()) <= first_output
    assert a.argmax_on_engine


def test_refusals(model):
    with pytest.raises(ValueError, match=r"65 tokens do not fit the context of 64 positions "
                                         r"\(1 too many\)"):
        compile_prefill(model, [1] * 65)
    with pytest.raises(ValueError, match="must not be empty"):
        compile_prefill(model, [])
    with pytest.raises(ValueError, match="token 13 is not in the vocabulary"):
        compile_prefill(model, [1, 13])
    full = [1] * 64
    compile_prefill(model, full)                      # the default configuration fits 64
    with pytest.raises(ValueError, match=r"the prefill of 64 tokens needs 3502 SBUF rows "
                                         r"\(.*\); the engine has 1024: 2478 short"):
        compile_prefill(model, full, replace(DEFAULT_CONFIG, sbuf_rows=1024))
    with pytest.raises(ValueError, match=r"needs 1539 PSUM rows .*the engine has 1024: "
                                         r"515 short"):
        compile_prefill(model, full, replace(DEFAULT_CONFIG, psum_rows=1024))
    with pytest.raises(ValueError, match=r"needs 4260 commands .*the engine has 4096: "
                                         r"164 short"):
        compile_prefill(model, full, PrefillConfig(psum_rows=2048))
    with pytest.raises(ValueError, match=r"needs \d+ DRAM bytes .*the engine has 65536: "
                                         r"\d+ short"):
        compile_prefill(model, [1] * 8, replace(DEFAULT_CONFIG, dram_bytes=1 << 16))
    with pytest.raises(ValueError, match="weights_in must be"):
        compile_prefill(model, [1], weights_in="host")


RTL_CONFIG = PrefillConfig(n=8, sbuf_rows=512, psum_rows=64, dram_bytes=1 << 17, commands=4096)


def test_full_prefill_on_the_rtl_equals_the_emulator(model):
    """The whole prefill of a 2-token prompt (both layers, all heads, the argmax: ~14,000
    cycles, ~25 s in the Amaranth simulator) on hdl.PrefillEngine with memories sized for it:
    every command issues in the same cycle as on the emulator, and the outputs are the
    reference's."""
    tokens = task.tokenize("7+")
    plan = compile_prefill(model, tokens, RTL_CONFIG)
    emulated = run_prefill(plan)
    rtl = run_prefill(plan, backend="rtl")
    assert rtl.issue == emulated.issue and rtl.cycles == emulated.cycles
    check_outputs(model, tokens, rtl)
