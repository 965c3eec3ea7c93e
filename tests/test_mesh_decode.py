"""Decode on the mesh (programs/mesh_decode) against the integer reference: generated tokens
equal ``IntModel.generate_int``, and every intermediate tensor of a step, the logits and the KV
cache the step appends are those of ``int_decode_step``, bit for bit, on the emulator; the
placement, its report and its refusals; a synthetic larger model on 8x8."""

import copy
import re

import numpy as np
import pytest

from mesh import MeshConfig
from programs.mesh_decode import (MeshDecoder, ModelDims, PlacementError, plan, prefill,
                                  random_int_model)
from programs.mesh_decode.plan import smallest_fits
from programs.mesh_decode.decoder import KEPT_ONLY
from programs.transformer import task
from programs.transformer.model import IntModel

TENSORS = ("h1", "q", "k", "v", "o", "a", "x1", "h2", "u", "g", "f", "x2")


@pytest.fixture(scope="module")
def tiny():
    return IntModel.load()


_DECODERS = {}


def decoder(model, config, **kwargs):
    key = (id(model), config, tuple(sorted(kwargs.items())))
    if key not in _DECODERS:
        _DECODERS[key] = MeshDecoder(model, config, **kwargs)
    return _DECODERS[key]


def reference(model, prompt, steps):
    """The reference's prefill, then ``steps`` decode steps: (first token, prefill cache,
    generated tokens, trace and logits of the last step, cache after it)."""
    _, cache, first = prefill(model, prompt)
    c, token, tokens = copy.deepcopy(cache), first, []
    for s in range(steps):
        trace = {}
        logits = model.int_decode_step(token, c.length, c, trace=trace)
        token = int(np.argmax(logits))
        tokens.append(token)
    return first, cache, tokens, trace, logits, c


def assert_last_step_exact(dec, result, trace, logits, cache):
    for l in range(dec.geo.L):
        names = TENSORS if dec.keep_intermediates else \
            [n for n in TENSORS if n not in KEPT_ONLY] if l == dec.geo.L - 1 else ()
        for name in names:
            got = dec.read(result, name, l)
            want = np.asarray(trace[f"l{l}.{name}"]).reshape(-1)
            assert np.array_equal(got, want), f"layer {l} {name}: first difference at " \
                f"{np.flatnonzero(got != want)[:4]}"
        K, V = dec.read_kv(result, l, cache.length)
        Kr, Vr = (np.swapaxes(t[0], 0, 1).reshape(cache.length, -1) for t in cache.layers[l])
        assert np.array_equal(K, Kr) and np.array_equal(V, Vr), f"layer {l} KV cache"
    if dec.keep_intermediates:
        assert np.array_equal(dec.read(result, "x0"), np.asarray(trace["x0"]).reshape(-1))
    assert np.array_equal(dec.read(result, "final.h"), np.asarray(trace["final.h"]).reshape(-1))
    assert np.array_equal(dec.read(result, "logits"), logits)


# The tiny model --------------------------------------------------------------------------------

def test_one_step_every_tensor_4x4(tiny):
    dec = decoder(tiny, MeshConfig(4, 4))
    first, cache, tokens, trace, logits, after = reference(tiny, "123+459=", 1)
    run = dec.run(cache, first, steps=1)
    assert run.tokens == tokens
    assert_last_step_exact(dec, run.result, trace, logits, after)


@pytest.mark.parametrize("shape, colors, prompt", [((4, 4), 8, "7+86="),
                                                   ((8, 8), 8, "123+459="),
                                                   ((8, 8), 9, "45+678=")],
                         ids=["4x4", "8x8", "8x8-bypass"])
def test_generates_the_tokens_of_generate_int(tiny, shape, colors, prompt):
    """A multi-step loop on the mesh: the token goes back through the embedding tables on the
    mesh, the loop stops at END; the last step's tensors are the reference's. With a ninth
    color the row all-reduces run as two chains (the west half's on the bypass color)."""
    dec = decoder(tiny, MeshConfig(*shape, colors=colors))
    assert dec.geo.split == (4 if colors > 8 else 0)
    expected = tiny.generate_int(prompt)
    steps = len(expected) - 1
    first, cache, tokens, trace, logits, after = reference(tiny, prompt, steps)
    assert [first] + tokens == expected
    run = dec.run(cache, first, steps=steps + 2, end=task.END)     # END stops it early
    assert [first] + run.tokens == expected
    assert_last_step_exact(dec, run.result, trace, logits, after)


def test_smallest_mesh_with_two_heads_per_row(tiny):
    """16 tiles is the fewest the tiny model fits at 4,096 words; 8x2 puts two heads on a
    row (4x4 one, 8x8 half of one)."""
    config = MeshConfig(8, 2)
    assert smallest_fits(ModelDims.of(tiny), config) == (16, [(4, 4), (2, 8), (8, 2)])
    dec = decoder(tiny, config)
    assert dec.geo.hl == 2
    first, cache, tokens, trace, logits, after = reference(tiny, "45+678=", 2)
    run = dec.run(cache, first, steps=2)
    assert run.tokens == tokens
    assert_last_step_exact(dec, run.result, trace, logits, after)


def test_unrolled_layers_equal_the_loop(tiny):
    dec = decoder(tiny, MeshConfig(4, 4), layer_loop=False)
    looped = decoder(tiny, MeshConfig(4, 4))
    assert looped.loop and not dec.loop
    assert max(dec.code_sizes.values()) > max(looped.code_sizes.values())
    first, cache, tokens, trace, logits, after = reference(tiny, "9+9=", 1)
    run = dec.run(cache, first, steps=1)
    assert run.tokens == tokens
    assert_last_step_exact(dec, run.result, trace, logits, after)


# A synthetic larger model ------------------------------------------------------------------------

def test_synthetic_d128_on_8x8():
    """A larger model with random weights, its layers sharing their working buffers so that
    the weights fill most of the SRAM; the last layer's tensors are checked."""
    model = random_int_model(d_model=128, n_heads=8, d_ff=640, n_layers=2, vocab=32, seed=1)
    with pytest.raises(PlacementError, match="short"):
        plan(ModelDims.of(model), MeshConfig(8, 8))
    dec = decoder(model, MeshConfig(8, 8), keep_intermediates=False)
    assert dec.geo.d == 128 and dec.geo.rd == 16 and dec.geo.hl == dec.geo.g == 1
    assert 0.85 < dec.plan.max_words / 4096 <= 1
    used = [cp.by_category() for cp in dec.plan.cores.values()]
    weights = sum(u["weights"] for u in used)
    assert weights * 4 == ModelDims.of(model).weight_bytes
    assert weights / sum(sum(u.values()) for u in used) > 0.65
    prompt = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3]
    first, cache, tokens, trace, logits, after = reference(model, prompt, 2)
    assert len(set(np.asarray(trace["l1.x2"]).reshape(-1).tolist())) > 40   # not degenerate
    run = dec.run(cache, first, steps=2)
    assert run.tokens == tokens
    assert_last_step_exact(dec, run.result, trace, logits, after)


@pytest.mark.parametrize("shape", [(4, 8), (1, 2)], ids=["4x8", "1x2"])
def test_synthetic_small_model_on_odd_shapes(shape):
    """Four rows share a head (4x8: d/H = 4 dims per row), or a mesh one column wide."""
    model = random_int_model(d_model=32, n_heads=2, d_ff=64, n_layers=2, vocab=16, seed=3,
                             context=32)
    dec = decoder(model, MeshConfig(*shape, sram_words=8192))
    assert (dec.geo.g, dec.geo.hl) == ((4, 1) if shape == (4, 8) else (1, 1))
    first, cache, tokens, trace, logits, after = reference(model, [1, 2, 3, 4, 5], 2)
    run = dec.run(cache, first, steps=2)
    assert run.tokens == tokens
    assert_last_step_exact(dec, run.result, trace, logits, after)


def test_argmax_ties_go_to_the_lowest_index():
    """W_out's columns 8..15 repeat 0..7, so the largest logit always appears twice, on
    different rows of the east column (4 logits per row): the token is the lower index."""
    model = random_int_model(d_model=32, n_heads=2, d_ff=64, n_layers=1, vocab=16, seed=5,
                             context=32)
    model.wout[:, 8:] = model.wout[:, :8]
    dec = MeshDecoder(model, MeshConfig(4, 4))
    first, cache, tokens, trace, logits, after = reference(model, [4, 2, 7], 3)
    assert all(t < 8 for t in tokens) and logits.max() == logits[8:].max()
    run = dec.run(cache, first, steps=3)
    assert run.tokens == tokens
    assert np.array_equal(dec.read(run.result, "logits"), logits)


# Placement ------------------------------------------------------------------------------------------

def test_placement_report(tiny):
    dec = decoder(tiny, MeshConfig(4, 4))
    text = dec.report()
    assert "4x4 mesh, SRAM 4096 words per core" in text
    assert "words on core (3,3)" in text and "layers looped" in text
    p = dec.plan
    assert p.max_words <= 4096
    # every weight byte is resident exactly once (blocks are packed four int8 per word)
    dims = ModelDims.of(tiny)
    weights = sum(cp.by_category()["weights"] for cp in p.cores.values())
    assert weights * 4 == dims.weight_bytes
    # the KV cache holds the whole context: K rows and V columns of every layer
    kv = sum(cp.by_category()["kv"] for cp in p.cores.values())
    assert kv * 4 == 2 * dims.n_layers * dims.context * dims.d_model
    assert max(dec.code_sizes.values()) <= 1024
    for tile in ((0, 0), (3, 0), (0, 3), (3, 3)):      # the SRAM map has no gap nor overlap
        regions = p.core_map(*tile)
        assert all(a + n == b for (a, n, *_), (b, *_) in zip(regions, regions[1:]))
        assert regions[0][0] == 0 and regions[-1][0] + regions[-1][1] == p.cores[tile].total


def test_refusals(tiny):
    dims = ModelDims.of(tiny)
    with pytest.raises(PlacementError) as refused:
        plan(dims, MeshConfig(2, 2))
    found = re.fullmatch(r"core \(1, 1\) of the 2x2 mesh needs ([\d,]+) SRAM words \(largest: "
                         r"2 x W_qkv block 768, .*\); 4,096 available: ([\d,]+) short; a 4x4 "
                         r"mesh or larger fits \(so do 2x8 and 8x2: 16 tiles is the fewest\); with "
                         r"sram_words >= ([\d,]+) the 2x2 mesh fits", str(refused.value))
    need, short, enough = (int(v.replace(",", "")) for v in found.groups())
    assert need - 4096 == short and enough == need
    plan(dims, MeshConfig(2, 2, sram_words=need))
    with pytest.raises(PlacementError, match="short"):
        plan(dims, MeshConfig(2, 2, sram_words=need - 1))
    with pytest.raises(PlacementError, match="d_model 64 does not split into 3 columns"):
        plan(dims, MeshConfig(3, 4))
    with pytest.raises(PlacementError, match="needs 7 colors, the mesh has 6"):
        plan(dims, MeshConfig(8, 8, colors=6))
    with pytest.raises(PlacementError, match="instruction words; 256 available"):
        MeshDecoder(tiny, MeshConfig(4, 4, imem_words=256))
    big = random_int_model(d_model=256, n_heads=8, d_ff=512, n_layers=2, vocab=64)
    with pytest.raises(PlacementError, match=r"core \(7, 7\) of the 8x8 mesh needs [\d,]+ SRAM "
                       r"words .* short; a 16x16 mesh or larger fits; with sram_words >= "
                       r"[\d,]+ the 8x8 mesh fits"):
        plan(ModelDims.of(big), MeshConfig(8, 8))


def test_state_is_checked(tiny):
    dec = decoder(tiny, MeshConfig(4, 4))
    _, cache, first = prefill(tiny, "7+86=")
    with pytest.raises(ValueError, match="do not fit the context"):
        dec.program(cache, first, steps=64)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        dec.program(cache, 13)
