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

from emulator.mesh_delivery import DeliveryCommand
from emulator.system import SystemImage, run_system
from mesh import MeshConfig
from mesh.link import LinkConfig

from .mesh_decode import MeshDecoder
from .prefill_compiler import DEFAULT_CONFIG, _phase_cycles, compile_prefill, run_prefill
from .transformer import task
from .transformer.model import IntModel, KVCache

__all__ = ["SystemRun", "SystemFailure", "run_disaggregated", "BACKENDS",
           "SingleEngineRun", "run_single_engine"]

BACKENDS = ("emulator", "verilator")

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
    split by phase; ``total_cycles``: every phase's cycles summed, which is
    ``system_cycles``, the system run's cycle count (docs/ARCHITECTURE.md section 13: the link
    phase here is the stage into the sender's memory and the link); ``rtl``: None, or the RTL
    run's backend, cycles and wall seconds when it ran too (it is checked equal to the
    emulator's in every phase cycle, SRAM, counter and the DRAM)."""
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
    system_cycles: int = 0
    rtl: dict = None

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
            "system_cycles": self.system_cycles,
            "rtl": self.rtl,
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


def _prefill_phase(plan, cycles, issue, counters, first_token):
    """The prefill phase's dict of an engine run of ``plan`` (its cycles, the issue cycle of
    every command, its counters)."""
    n, macs = plan.config.n, int(counters.get("macs", 0))
    return {"cycles": cycles, "prompt_tokens": len(plan.tokens), "first_token": first_token,
            "phase_cycles": _phase_cycles(plan, issue, cycles), "dma_bytes": plan.dma_bytes,
            "dram_bytes_per_cycle": round(plan.dma_bytes / cycles, 3), "array": f"{n}x{n}",
            "macs": macs, "array_utilization": round(macs / (cycles * n * n), 4)}


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
    (:func:`emulator.channel.make_channels`; the emulator only: the RTL's channels are
    fault-free); ``backend``: "emulator", or "verilator" to run the same system image on the
    RTL system top too (standalone Verilator; the first run builds it, minutes) and check it
    equal to the emulator's run. ``progress(phase, cycle)`` is called as phases start and
    during the mesh run."""
    if backend not in BACKENDS:
        raise ValueError(f"the disaggregated system runs on {' or '.join(BACKENDS)}, not "
                         f"{backend!r}")
    if backend != "emulator" and faults is not None:
        raise ValueError("link faults are modelled on the emulator only (the RTL system's "
                         "channels are fault-free)")
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

    # The system's image: the engine stores K, V and the token as the KV message into its DRAM;
    # the mesh program receives it, then decodes.
    message = decoder.kv_message(len(tokens), prefill_config.n, budget - 1, task.END)
    plan = compile_prefill(model, tokens, prefill_config, kv_message=message)
    message = plan.kv_message
    if message.total_words > min(link_config.buffer_words, link_config.source_words):
        raise ValueError(f"the {message.total_words}-word KV message does not fit the link's "
                         f"{min(link_config.buffer_words, link_config.source_words)}-word "
                         f"buffers")
    image = SystemImage(prefill_config, tuple(plan.commands), plan.dram, link_config,
                        message.base, message.total_words,
                        DeliveryCommand(**decoder.delivery_command(message)), decoder.base,
                        name=f"disaggregated-{config.shape}")
    lap("compile")

    se = config.tile_index(config.width - 1, config.height - 1)
    outn = decoder.plan.cores[(config.width - 1, config.height - 1)].addr("outn")
    token_cycles = []                 # mesh cycles at which each decoded token is stored

    def watch(emu):
        if emu.cores.sram[se, outn] > len(token_cycles):
            token_cycles.append(emu.cycle)
            _phase(progress, f"decode: token {len(token_cycles) + 1}", emu.cycle)
        elif emu.cycle % 500 == 0:
            _phase(progress, "mesh", emu.cycle)

    _phase(progress, "prefill, link and mesh (emulator)")
    run = run_system(image, faults=faults, seed=seed, watch=watch)
    lap("emulator")
    if run.status == "error":
        raise SystemFailure(f"the system stopped with {run.error_cause.name}: "
                            + (f"the link did not deliver the KV message ({run.tx_error.name})"
                               if run.tx_error else "see its counters"))
    if run.status != "done":
        raise SystemFailure(f"the system run ended with {run.status} after {run.cycles} "
                            f"cycles")
    rtl = None
    if backend == "verilator":
        from wafer.verilator_system import run_system_verilator
        _phase(progress, "the same system on the RTL (Verilator)")
        rtl = run_system_verilator(image)
        differ = rtl.same_as(run)
        if differ:
            raise SystemFailure("the RTL and the emulator differ: " + "; ".join(differ[:3]))
        lap("verilator")
    return _report(prompt, config, backend, decoder, plan, image, run, token_cycles, reference,
                   seconds, rtl)


def _report(prompt, config, backend, decoder, plan, image, run, token_cycles, reference,
            seconds, rtl):
    """The :class:`SystemRun` of a finished system run (the phases split at its events)."""
    ev, message, lcfg = run.events, plan.kv_message, image.link_config
    first = message.read_token(run.dram)
    engine = run.engine
    P = ev["prefill_end"] + 1                       # through the cycle its done is seen
    prefill = {**_prefill_phase(plan, engine.cycles, engine.issue, engine.counters, first),
               "cycles": P, "engine_cycles": engine.cycles}
    details = run.link_details
    link_cycles = ev["mesh_start"] - ev["link_start"]
    link = {"cycles": ev["mesh_start"] - ev["stage_start"],
            "stage_cycles": ev["link_start"] - ev["stage_start"], "link_cycles": link_cycles,
            "sender_done_cycles": (ev["tx_done"] - ev["link_start"]
                                   if ev["tx_done"] is not None else None),
            "message_words": message.total_words, "message_bytes": message.total_bytes,
            "prompt_kv_bytes": 2 * message.n_layers * message.prompt_tokens
            * message.d_model,
            "words_per_tile": message.words, "lanes": lcfg.lanes,
            "lane_width": lcfg.lane_width, "latency": lcfg.latency,
            "packets": run.link["sent"], "retransmits": run.link["retransmits"],
            "timeouts": run.link["timeouts"], "nacks": details["nacks"],
            "lanes_dead": details["lanes_dead"], "channel_drops": details["dropped"],
            "channel_lost_dead": details["lost_dead"],
            "goodput": round(message.total_bytes * 8 / link_cycles / lcfg.line_rate, 4)}
    mesh = run.mesh
    delivered = ev["delivery_done"] + 1 - ev["mesh_start"]   # mesh cycles
    delivery = {"cycles": delivered, "words": message.total_words,
                "words_per_tile": message.words, "color": decoder.receive[0]}
    mesh_tokens = decoder.tokens(mesh)
    if len(token_cycles) != len(mesh_tokens):
        raise AssertionError("the decode token count and the cycles seen differ")
    token_cycles = [c - delivered for c in token_cycles]
    cycles = mesh.cycles - delivered
    counters = {name: int(mesh.counter(name).sum())
                for name in ("instructions", "macs", "stall_in", "stall_out", "wavelets_out")}
    useful = decoder.dims.macs_per_token * len(mesh_tokens)
    decode = {"cycles": cycles, "steps": len(mesh_tokens), "token_cycles": token_cycles,
              "step_cycles": np.diff([0] + token_cycles).tolist(),
              "cycles_per_token": round(cycles / len(mesh_tokens), 1) if mesh_tokens else 0,
              "weight_macs": useful,
              "mac_utilization": round(useful / (4 * config.tiles * cycles), 4) if cycles
              else 0.0,
              "counted_mac_utilization": round(counters["macs"]
                                               / (4 * config.tiles * mesh.cycles), 4),
              "fabric_wait_share": round((counters["stall_in"] + counters["stall_out"])
                                         / int(mesh.counter("cycles").sum()), 4),
              "counters": counters}
    ttft = {"prefill": P, "link": link["cycles"], "delivery": delivered,
            "first_decode_step": token_cycles[0] if token_cycles else 0}
    ttft["cycles"] = sum(ttft.values())
    ttft["first_token_on_engine"] = P
    verified = None
    if rtl is not None:
        verified = {"backend": rtl.backend, "cycles": rtl.cycles,
                    "equal_to_emulator": True, "seconds": round(rtl.seconds, 3)}
    return SystemRun(prompt=prompt, mesh=config.shape, backend=backend,
                     tokens=[first] + mesh_tokens, reference=reference, prefill=prefill,
                     link=link, delivery=delivery, decode=decode, ttft=ttft, seconds=seconds,
                     system_cycles=run.cycles, rtl=verified)


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
    plan = compile_prefill(model, tokens, prefill_config or DEFAULT_CONFIG)
    pre = run_prefill(plan, "emulator")
    out = pre.outputs
    prefill = _prefill_phase(plan, pre.cycles, pre.issue, pre.counters, int(out["token"]))
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
