"""The KV message (programs/kv_message.py): its layout, the prefill engine storing K, V and the
token straight into it, and the mesh decoder's receive prelude taking it from a delivery."""

import numpy as np
import pytest

from emulator import MeshEmulator
from emulator.mesh_delivery import DeliveryCommand, DeliveryModel, run_delivery
from mesh import MeshConfig
from programs.kv_message import HEADER_FIELDS, KVMessage
from programs.mesh_decode import MeshDecoder, prefill
from programs.prefill_compiler import compile_prefill, run_prefill
from programs.transformer import task
from programs.transformer.model import IntModel


@pytest.fixture(scope="module")
def model():
    return IntModel.load()


def test_layout_of_an_8_token_prompt_on_4x4():
    m = KVMessage(4, 4, 64, 2, 8, 8, steps=3, end=12, base=128)
    # token words 2, N, 6 host words: 9, padded to 10; S = 2 slots of 16 dims (4 words)
    assert (m.token_words, m.header, m.slots, m.slice_words) == (2, 10, 2, 4)
    assert m.words == 10 + 2 * 2 * 2 * 4 and m.total_bytes == 16 * 4 * m.words
    assert m.tile_address(1, 2) == 128 + 4 * m.words * 9
    stores = m.kv_stores(1, "v")
    assert len(stores) == 8 * 2            # 8 column tiles x 2 slots
    # column tile 3 (dims 24..31) is row slice 1, its second half; slot 1 = positions 4..7
    address, p0, count, stride, kt = stores[3 * 2 + 1]
    assert (p0, count, stride, kt) == (4, 4, 4 * m.words, 3)
    assert address == m.tile_address(0, 1) + 4 * (10 + 3 * 2 * 4 + 4) + 8
    # every byte of the K and V slots is stored once, none of the header
    covered = np.zeros(m.limit, dtype=int)
    for layer in range(2):
        for which in "kv":
            for address, _, count, stride, _ in m.kv_stores(layer, which):
                for i in range(count):
                    covered[address + i * stride:][:8] += 1
    for x, y in ((0, 0), (3, 3)):
        a = m.tile_address(x, y)
        assert not covered[a:a + 40].any() and (covered[a + 40:a + 4 * m.words] == 1).all()
    words = m.host_words()
    assert len(words) == 16
    header = words[m.tile_address(2, 0) + 8]
    assert header.tolist() == [m.words, 3, 8, 0, 2, 12, 2]
    assert HEADER_FIELDS == ("steps", "pos", "phase", "nloc", "end", "slots")


@pytest.mark.parametrize("args, message", [
    ((16, 16, 64, 2, 8, 8), "splits d_model 64 into 4-byte row slices; the engine stores 8-byte"),
    ((4, 4, 64, 2, 6, 8), "n = 6 bytes must be whole 32-bit words"),
    ((4, 4, 64, 2, 8, 0), "prompt_tokens must be a positive integer"),
])
def test_refusals(args, message):
    with pytest.raises(ValueError, match=message):
        KVMessage(*args)
    with pytest.raises(ValueError, match="must be a non-negative multiple of 8"):
        KVMessage(4, 4, 64, 2, 8, 8, base=4)


def test_prefill_stores_kv_and_token_into_the_message(model):
    """The same prefill with the message layout: K, V, x, the logits and the token equal the
    plain layout's, and every tile's token words hold the token in every byte."""
    tokens = task.tokenize("45+67=")
    template = KVMessage(8, 8, 64, 2, 8, len(tokens), steps=5, end=task.END)
    plan = compile_prefill(model, tokens, kv_message=template)
    plain = run_prefill(compile_prefill(model, tokens))
    run = run_prefill(plan)
    for name, value in plain.outputs.items():
        assert np.array_equal(run.outputs[name], value), name
    message = plan.kv_message
    assert message.limit <= len(plan.dram)
    words = message.message(run.dram).reshape(64, message.words)
    token = plain.outputs["token"]
    assert (words[:, :2] == token * 0x01010101).all()
    assert (words[:, 2] == message.words).all() and (words[:, 3] == 5).all()
    # 64 one-row token stores more than the plain prefill, and the K and V stores differ
    assert run.cycles > plain.cycles


def deliver(model, config, prompt, steps, watch=None, token=None):
    """(decoder, mesh result) of the prompt's KV message, from the prefill engine's DRAM,
    delivered into ``config``'s mesh running the receiving decoder (``token``: replaces the
    engine's token in the message)."""
    dec = MeshDecoder(model, config, receive_token_words=2)
    tokens = task.tokenize(prompt)
    plan = compile_prefill(model, tokens, kv_message=dec.kv_message(len(tokens), 8, steps,
                                                                      task.END))
    words = plan.kv_message.message(run_prefill(plan).dram)
    if token is not None:
        tiles = words.reshape(config.tiles, plan.kv_message.words)
        tiles[:, :2] = token * 0x01010101
    emu = MeshEmulator(dec.base)
    buffer = np.zeros(4096, dtype=np.uint32)
    buffer[:words.size] = words
    command = DeliveryCommand(**dec.delivery_command(plan.kv_message))
    run = run_delivery(emu, DeliveryModel(config, buffer), command,
                       watch=None if watch is None else lambda _: watch(emu))
    return dec, run.result


def test_receive_prelude_leaves_the_state_the_host_would_load(model):
    """Delivered into a 4x4 mesh running the decoder's program, the message leaves every
    core's SRAM, when it reaches the decode loop, as the host-loaded program's image (the
    step state and the K and V cache), but for layer 0's scratch buffers."""
    config = MeshConfig(4, 4)
    prompt = "305+8="
    reached = {}
    loop = None

    def watch(emu):
        for t in np.flatnonzero(emu.cores.pc == loop):
            reached.setdefault(int(t), emu.cores.sram[t].copy())
    probe = MeshDecoder(model, config, receive_token_words=2)
    loop = np.array([next(s for s, _, p in probe.phase_marks[config.tile_xy(t)]
                          if p == "embed") for t in range(config.tiles)])
    dec, _ = deliver(model, config, prompt, 4, watch)
    _, cache, first = prefill(model, prompt)
    want = MeshDecoder(model, config).program(cache, first, steps=4, end=task.END).sram()
    for t in range(config.tiles):
        cp = dec.plan.cores[config.tile_xy(t)]
        scratch = [cp.addr(name, 0) + k for name in ("op", "qkvb")
                   for k in range(cp.size(name))]
        differ = set(np.flatnonzero(reached[t] != want[t]).tolist())
        assert differ <= set(scratch), (config.tile_xy(t), sorted(differ - set(scratch))[:5])


@pytest.mark.parametrize("steps, token", [(0, None), (3, task.END)])
def test_nothing_to_decode_halts_after_the_delivery(model, steps, token):
    """No decode steps, or the engine's token already END: every core halts once its words
    are in, no token decoded."""
    config = MeshConfig(4, 4)
    dec, result = deliver(model, config, "1+2=", steps, token=token)
    assert dec.tokens(result) == [] and result.halted.all()
    pos = [int(result.sram[config.tile_index(x, y), cp.addr("pos")])
           for (x, y), cp in dec.plan.cores.items()]
    assert pos == [4] * config.tiles                   # no step ran (a step moves pos on)


def test_a_decoder_for_the_message_needs_a_free_color(model):
    from programs.mesh_decode.plan import PlacementError
    with pytest.raises(PlacementError, match="colors >= 8 fits"):
        MeshDecoder(model, MeshConfig(4, 4, colors=7), receive_token_words=2)
