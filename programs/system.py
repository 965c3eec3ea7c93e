"""Disaggregated inference of the tiny transformer, end to end on the emulators: the prompt's
prefill on the prefill engine, its KV cache and first token over the packet link, delivered
into the mesh's SRAMs, and the decode loop on the mesh, every phase cycle-exact and the tokens
equal to :meth:`programs.transformer.model.IntModel.generate_int`.

:func:`run_disaggregated` runs these phases **one after another** (each starts when the previous
one has finished; cycles add up):

1. **prefill** (:mod:`programs.prefill_compiler`): the whole prompt as one command stream on
   :class:`emulator.prefill.PrefillEmulator`. K and V of every layer and the first generated
   token (the argmax, on the engine) are stored straight into the **KV message**
   (:mod:`programs.kv_message`): for every tile, its header (the token; N, the decode budget,
   the position, ... written into the DRAM image by the host, which knows the prompt's length)
   and the K and V slots of the prompt's positions that tile owns, nothing more.
2. **link** (:class:`emulator.link.LinkEmulator`, optional seeded faults): the message, as the
   engine's DRAM holds it, into the receive buffer of the mesh's side; its cycles run from the
   command to the *receiver's* done (every word in the buffer), which is what delivery waits
   for. The sender's done (every ACK back) is reported too.
3. **delivery and decode: one mesh run** of one program
   (:class:`programs.mesh_decode.MeshDecoder` with ``receive_token_words``): the delivery
   engine (:class:`emulator.mesh_delivery.DeliveryModel`) streams the message into the mesh's
   west edge on the mesh's last color while every core takes its own words (the receive
   prelude: the state, K into its cache, V transposed into its cache), then every core goes on
   into the decode loop until END or the answer's budget of tokens, as ``generate_int``. The
   mesh program holds only code, weights and tables: any prompt runs on the same image. The
   run is split at the cycle the delivery engine is done (every word taken by a core):
   *delivery* before it, *decode* after it (a core whose words came early starts decoding
   before that cycle; the split is still exact). The cycle at which the south-east core stores
   each token gives the per-token cycles.

Time to first token, as reported: prefill + transfer (link + delivery) + the first decode step
(the first token the mesh produces, the answer's second). The answer's first token itself is
known on the engine when the prefill ends (also reported).

:func:`run_single_engine` is the comparison: the same prompt on the prefill engine alone (the
same prefill, then the decode steps of :mod:`programs.decode_baseline`, every weight streamed
from the engine's DRAM in every step).

Not modelled here: overlap of the phases (e.g. sending layer 0's KV while layer 1 computes).
"""

import time
from dataclasses import dataclass, field

import numpy as np

from emulator import MeshEmulator
from emulator.link import LinkEmulator, LinkStalled
from emulator.mesh_delivery import DeliveryCommand, DeliveryModel, run_delivery
from mesh import MeshConfig
from mesh.link import LinkConfig

from .mesh_decode import MeshDecoder
from .prefill_compiler import DEFAULT_CONFIG, compile_prefill, run_prefill
from .transformer import task
from .transformer.model import IntModel, KVCache

__all__ = ["SystemRun", "SystemFailure", "run_disaggregated", "BACKENDS",
           "SingleEngineRun", "run_single_engine"]

BACKENDS = ("emulator",)

_MODEL = None
_DECODERS = {}


class SystemFailure(RuntimeError):
    """A phase that did not do its job (the link failed, a delivery left wrong SRAM)."""


def _default_model():
    global _MODEL
    if _MODEL is None:
        _MODEL = IntModel.load()
    return _MODEL


def _decoder(model, config, token_words):
    """The :class:`MeshDecoder` of ``model`` on ``config``, receiving the KV message of an
    engine with n = 4 ``token_words`` (compiled once per process)."""
    key = (id(model), config, token_words)
    if key not in _DECODERS:
        _DECODERS[key] = (model, MeshDecoder(model, config, receive_token_words=token_words))
    return _DECODERS[key][1]


def _mesh_config(mesh):
    if isinstance(mesh, MeshConfig):
        return mesh
    return MeshConfig.parse_shape(mesh)


@dataclass
class SystemRun:
    """What :func:`run_disaggregated` did.

    ``tokens``: the generated tokens (the engine's first, then the mesh's); ``reference``: those
    of ``IntModel.generate_int``; ``exact``: equal; ``correct``: the answer is right
    (:func:`programs.transformer.task.check`). ``prefill``, ``link``, ``delivery``, ``decode``:
    per-phase dicts (cycles and counters, see :meth:`report`); ``ttft``: time to first token
    split by phase; ``total_cycles``: every phase's cycles summed."""
    prompt: str
    mesh: str
    backend: str
    tokens: list
    reference: list
    prefill: dict
    link: dict
    delivery: dict
    decode: dict
    ttft: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)

    @property
    def text(self):
        return task.detokenize(self.tokens)

    @property
    def answer(self):
        """The answer as a number's digits, most significant first (the model writes them
        least significant first, then END)."""
        digits = self.tokens[:self.tokens.index(task.END)] if task.END in self.tokens \
            else self.tokens
        return task.detokenize(digits)[::-1]

    @property
    def exact(self):
        return self.tokens == self.reference

    @property
    def correct(self):
        return task.check(self.prompt, self.tokens)

    @property
    def transfer_cycles(self):
        return self.link["cycles"] + self.delivery["cycles"]

    @property
    def total_cycles(self):
        return self.prefill["cycles"] + self.transfer_cycles + self.decode["cycles"]

    def report(self, clock_mhz=1000.0):
        """The JSON-ready report; times in microseconds and rates at ``clock_mhz``."""
        us = lambda cycles: round(cycles / clock_mhz, 3)
        step = self.decode["cycles_per_token"]
        generated = len(self.tokens)
        return {
            "prompt": self.prompt, "mesh": self.mesh, "backend": self.backend,
            "tokens": self.tokens, "text": self.text, "answer": self.answer,
            "reference": self.reference, "exact": self.exact, "correct": self.correct,
            "clock_mhz": clock_mhz,
            "phases": {
                "prefill": self.prefill,
                "transfer": {"cycles": self.transfer_cycles, "link": self.link,
                             "delivery": self.delivery},
                "decode": self.decode,
            },
            "sequential": True,
            "ttft": {**self.ttft, "us": us(self.ttft["cycles"])},
            "total_cycles": self.total_cycles,
            "total_us": us(self.total_cycles),
            "tokens_per_second": {
                "decode": round(clock_mhz * 1e6 / step, 1) if step else None,
                "end_to_end": round(generated * clock_mhz * 1e6 / self.total_cycles, 1),
            },
            "emulator_seconds": self.seconds,
        }


def _cache_from_prefill(outputs, layers, heads):
    """A :class:`KVCache` (batch 1) of the prefill's K and V (M x d int8 each per layer)."""
    cache = KVCache(1)
    cache.layers = [None] * layers
    for l in range(layers):
        kv = []
        for name in ("k", "v"):
            a = np.asarray(outputs[f"l{l}.{name}"], dtype=np.int64)
            M, d = a.shape
            kv.append(a.reshape(M, heads, d // heads).transpose(1, 0, 2)[None])
        cache.layers[l] = tuple(kv)
    cache.length = int(np.asarray(outputs["l0.k"]).shape[0])
    return cache


def _prefill(model, tokens, config, kv_message=None):
    """(plan, :class:`PrefillRun`, the prefill phase's dict) of ``tokens``; with
    ``kv_message`` the engine stores K, V and the token as that message."""
    plan = compile_prefill(model, tokens, config, kv_message=kv_message)
    pre = run_prefill(plan, "emulator")
    n = plan.config.n
    macs = int(pre.counters.get("macs", 0))
    return plan, pre, {
        "cycles": pre.cycles, "prompt_tokens": len(tokens),
        "first_token": int(pre.outputs["token"]), "phase_cycles": pre.phase_cycles,
        "dma_bytes": plan.dma_bytes, "dram_bytes_per_cycle": round(pre.dram_bytes_per_cycle, 3),
        "array": f"{n}x{n}", "macs": macs, "array_utilization": round(macs / (pre.cycles * n * n),
                                                                      4)}


def _laps(seconds):
    """A function that records in ``seconds[name]`` the wall seconds since its last call."""
    clock = [time.perf_counter()]

    def lap(name):
        now = time.perf_counter()
        seconds[name] = round(now - clock[0], 3)
        clock[0] = now
    return lap


def _phase(progress, name, cycle=None):
    if progress is not None:
        progress(name, cycle)


def run_disaggregated(prompt, mesh="4x4", prefill_config=None, link_config=None, faults=None,
                      seed=0, backend="emulator", *, model=None, progress=None):
    """Run ``prompt`` ("a+b=") through prefill on the engine, the link, delivery into the mesh
    and decode on the mesh (see the module docstring); return a :class:`SystemRun`.

    ``mesh``: "WxH" or a :class:`MeshConfig`; ``prefill_config``: a
    :class:`mesh.prefill.PrefillConfig` (default :data:`DEFAULT_CONFIG`); ``link_config``: a
    :class:`LinkConfig` (default ``LinkConfig()``); ``faults``, ``seed``: the link channels'
    (:func:`emulator.channel.make_channels`); ``backend``: "emulator". ``progress(phase, cycle)`` is called as phases start and during the
    mesh runs."""
    if backend not in BACKENDS:
        raise ValueError(f"the disaggregated system runs on the emulator only (backend "
                         f"{backend!r}: there is no RTL system top)")
    model = _default_model() if model is None else model
    tokens = task.tokenize(prompt)
    task.parse_prompt(prompt)
    config = _mesh_config(mesh)
    prefill_config = prefill_config or DEFAULT_CONFIG
    # refuses a mesh the model or the message does not fit first
    decoder = _decoder(model, config, prefill_config.n // 4)
    link_config = LinkConfig() if link_config is None else link_config
    reference = model.generate_int(prompt)
    budget = min(task.MAX_ANSWER, model.config["context"] - len(tokens))

    seconds = {}
    lap = _laps(seconds)

    # 1. Prefill on the engine: K, V and the token land in its DRAM as the KV message.
    _phase(progress, "prefill")
    kv_message = decoder.kv_message(len(tokens), prefill_config.n, budget - 1, task.END)
    plan, pre, prefill = _prefill(model, tokens, prefill_config, kv_message)
    first = prefill["first_token"]
    lap("prefill")
    generated = [first]
    link = {"cycles": 0}
    delivery = {"cycles": 0}
    decode = {"cycles": 0, "steps": 0, "token_cycles": [], "step_cycles": [],
              "cycles_per_token": 0}
    if first != task.END and budget > 1:
        # 2. The link: the message, as the engine's DRAM holds it.
        message = plan.kv_message.message(pre.dram)
        if message.size > link_config.buffer_words:
            raise ValueError(f"the {message.size}-word message does not fit the link's "
                             f"{link_config.buffer_words}-word receive buffer")
        _phase(progress, "link")
        lk = LinkEmulator(link_config, faults=faults, seed=seed)
        try:
            sent = lk.send(message)
        except LinkStalled as error:
            raise SystemFailure(f"the link did not deliver the KV message: {error}") from None
        if not sent.ok:
            raise SystemFailure(f"the link did not deliver the KV message: "
                                f"{sent.error.name} {sent.error_message}")
        if not np.array_equal(sent.words, message):
            raise SystemFailure("the link's receive buffer differs from the message sent")
        link = {"cycles": sent.rx_done_cycle - sent.start_cycle,
                "sender_done_cycles": sent.done_cycle - sent.start_cycle,
                "message_words": int(message.size), "message_bytes": 4 * int(message.size),
                "prompt_kv_bytes": 2 * len(model.layers) * len(tokens)
                * model.config["d_model"],
                "words_per_tile": plan.kv_message.words, "lanes": link_config.lanes,
                "lane_width": link_config.lane_width, "latency": link_config.latency,
                "packets": sent.sent, "retransmits": sent.retransmits,
                "timeouts": sent.timeouts, "nacks": sent.nacks_sent,
                "lanes_dead": sent.lanes_dead, "channel_drops": sent.channels["dropped"],
                "channel_lost_dead": sent.channels["lost_dead"],
                "goodput": round(sent.goodput, 4), "seed": seed}
        lap("link")

        # 3. One mesh run: the delivery of the message into the mesh's west edge while every
        # core takes its words, then the decode loop until END or the budget.
        _phase(progress, "delivery", 0)
        emu = MeshEmulator(decoder.base)
        se = config.tile_index(config.width - 1, config.height - 1)
        outn = decoder.plan.cores[(config.width - 1, config.height - 1)].addr("outn")
        sram = emu.cores.sram
        token_cycles = []

        def watch(cycle):
            if sram[se, outn] > len(token_cycles):
                token_cycles.append(cycle)
                _phase(progress, f"decode: token {len(token_cycles) + 1}", cycle)
            elif cycle % 500 == 0:
                _phase(progress, "decode", cycle)

        command = DeliveryCommand(**decoder.delivery_command(plan.kv_message))
        dr = run_delivery(emu, DeliveryModel(config, lk.rx.buffer), command,
                          max_cycles=5_000_000, watch=watch)
        result = dr.result
        delivered = dr.done_cycle + 1           # the mesh run starts in cycle 0
        delivery = {"cycles": delivered, "words": int(message.size),
                    "words_per_tile": plan.kv_message.words, "color": command.color}
        mesh_tokens = decoder.tokens(result)
        if len(token_cycles) != len(mesh_tokens):
            raise AssertionError("the decode token count and the cycles seen differ")
        token_cycles = [c - delivered for c in token_cycles]
        generated += mesh_tokens
        dims = decoder.dims
        useful = dims.macs_per_token * len(mesh_tokens)
        counters = {name: int(result.counter(name).sum())
                    for name in ("instructions", "macs", "stall_in", "stall_out",
                                 "wavelets_out")}
        cycles = dr.cycles - delivered
        step_cycles = np.diff([0] + token_cycles).tolist()
        decode = {"cycles": cycles, "steps": len(mesh_tokens),
                  "token_cycles": token_cycles, "step_cycles": step_cycles,
                  "cycles_per_token": round(cycles / len(mesh_tokens), 1),
                  "weight_macs": useful,
                  "mac_utilization": round(useful / (4 * config.tiles * cycles), 4),
                  "counted_mac_utilization": round(counters["macs"]
                                                   / (4 * config.tiles * dr.cycles), 4),
                  "fabric_wait_share": round((counters["stall_in"] + counters["stall_out"])
                                             / int(result.counter("cycles").sum()), 4),
                  "counters": counters}
        lap("mesh")

    first_step = decode["token_cycles"][0] if decode["token_cycles"] else 0
    ttft = {"prefill": prefill["cycles"], "link": link["cycles"],
            "delivery": delivery["cycles"], "first_decode_step": first_step}
    ttft["cycles"] = sum(ttft.values())
    ttft["first_token_on_engine"] = prefill["cycles"]
    return SystemRun(prompt=prompt, mesh=config.shape, backend=backend, tokens=generated,
                     reference=reference, prefill=prefill, link=link, delivery=delivery,
                     decode=decode, ttft=ttft, seconds=seconds)


# One engine alone ---------------------------------------------------------------------------------

@dataclass
class SingleEngineRun:
    """What :func:`run_single_engine` did: ``tokens``, ``reference``, ``prefill`` (as in
    :class:`SystemRun`), ``decode`` (per step: cycles and the step's DRAM bound), ``ttft``."""
    prompt: str
    tokens: list
    reference: list
    prefill: dict
    decode: dict
    ttft: dict
    seconds: dict = field(default_factory=dict)

    @property
    def exact(self):
        return self.tokens == self.reference

    @property
    def total_cycles(self):
        return self.prefill["cycles"] + self.decode["cycles"]

    def report(self, clock_mhz=1000.0):
        step = self.decode["cycles_per_token"]
        return {"prompt": self.prompt, "system": "single engine", "tokens": self.tokens,
                "reference": self.reference, "exact": self.exact, "clock_mhz": clock_mhz,
                "phases": {"prefill": self.prefill, "decode": self.decode},
                "ttft": {**self.ttft, "us": round(self.ttft["cycles"] / clock_mhz, 3)},
                "total_cycles": self.total_cycles,
                "total_us": round(self.total_cycles / clock_mhz, 3),
                "tokens_per_second": {
                    "decode": round(clock_mhz * 1e6 / step, 1) if step else None,
                    "end_to_end": round(len(self.tokens) * clock_mhz * 1e6 / self.total_cycles,
                                        1)},
                "emulator_seconds": self.seconds}


def run_single_engine(prompt, prefill_config=None, backend="emulator", *, model=None,
                      progress=None):
    """``prompt`` on the prefill engine alone, for the comparison with
    :func:`run_disaggregated`: the same prefill, then each decode step as one command stream of
    :mod:`programs.decode_baseline` (every weight streamed from the engine's DRAM in every step,
    the KV cache read from DRAM), until END or the answer's budget, as ``generate_int``.
    Returns a :class:`SingleEngineRun`.

    Between steps the host compiles the next step's commands and builds its DRAM image from
    the model and the KV cache (the prefill's K and V, then every step's new rows, read from
    the engine's DRAM outputs); that costs no cycles here, nor does moving the prefill's K and
    V (row-major per layer) into the decode steps' segment-major cache layout. The decode
    cycles are the steps' engine cycles summed."""
    from .decode_baseline import compile_decode_step, run_decode_step

    if backend not in BACKENDS:
        raise ValueError(f"the single-engine run is on the emulator only, not {backend!r}")
    model = _default_model() if model is None else model
    tokens = task.tokenize(prompt)
    task.parse_prompt(prompt)
    reference = model.generate_int(prompt)
    budget = min(task.MAX_ANSWER, model.config["context"] - len(tokens))
    seconds = {}
    lap = _laps(seconds)
    _phase(progress, "prefill")
    _, pre, prefill = _prefill(model, tokens, prefill_config or DEFAULT_CONFIG)
    out = pre.outputs
    lap("prefill")
    generated = [prefill["first_token"]]
    layers, heads = len(model.layers), model.config["n_heads"]
    cache = _cache_from_prefill(out, layers, heads)
    steps, bounds, token_cycles = [], [], []
    while len(generated) < budget and generated[-1] != task.END:
        _phase(progress, f"decode: token {len(generated) + 1}", sum(steps))
        plan = compile_decode_step(model, generated[-1], cache.length, cache,
                                   prefill_config or DEFAULT_CONFIG)
        run = run_decode_step(plan, "emulator")
        steps.append(run.cycles)
        bounds.append(run.bound)
        token_cycles.append(sum(steps))
        generated.append(int(run.outputs["token"]))
        for l in range(layers):
            k, v = (np.asarray(run.outputs[f"l{l}.{name}"], dtype=np.int64)
                    .reshape(1, heads, 1, -1) for name in ("k", "v"))
            cache.append(l, k, v)
        cache.length += 1
    lap("decode")
    total = sum(steps)
    decode = {"cycles": total, "steps": len(steps), "token_cycles": token_cycles,
              "step_cycles": steps, "step_dram_bounds": bounds,
              "cycles_per_token": round(total / len(steps), 1) if steps else 0,
              "dram_bandwidth": (prefill_config or DEFAULT_CONFIG).dram_bandwidth}
    ttft = {"prefill": prefill["cycles"], "first_decode_step": steps[0] if steps else 0}
    ttft["cycles"] = sum(ttft.values())
    ttft["first_token_on_engine"] = prefill["cycles"]
    return SingleEngineRun(prompt, generated, reference, prefill, decode, ttft, seconds)
