"""A system run on :class:`hdl.system.SystemTop` in the Amaranth simulator (docs/ARCHITECTURE.md
section 13): the image loaded through the top's ports, the run stepped from Python, the mesh's
SRAMs and the DRAM read back through the peek ports. Slow (a Python step per cycle): for small
images and tests; ``wafer.verilator_system`` runs the same top without Python per cycle.
"""

import time

import numpy as np
from amaranth.sim import Simulator

from emulator.system import SystemImage, SystemResult
from mesh import RunResult, isa
from mesh.delivery import DeliveryError, FIELD_BITS
from mesh.link import TxError
from mesh.prefill import EngineError
from mesh.system import EVENTS, LINK_COUNTERS, SystemCause, SystemPhase, word_bytes

__all__ = ["run_system_amaranth", "dram_words"]


def dram_words(image):
    """The DRAM image as the top loads it: (index, value) of every non-zero DRAM word of W
    bytes."""
    W = word_bytes(image.prefill_config)
    raw = image.dram + bytes(-len(image.dram) % W)
    return [(i, int.from_bytes(raw[i * W:(i + 1) * W], "little"))
            for i in range(len(raw) // W) if any(raw[i * W:(i + 1) * W])]


def _status(phase, idle, stall_limit):
    """The status name of a run whose phase is ``phase`` after its last cycle (None: go on)."""
    if phase == SystemPhase.DONE:
        return "done"
    if phase == SystemPhase.ERROR:
        return "error"
    if idle >= stall_limit:
        return "no progress"
    return None


def run_system_amaranth(image, max_cycles=200_000, stall_limit=200):
    """Run ``image`` (a :class:`SystemImage`) on :class:`hdl.system.SystemTop` in the Amaranth
    simulator; returns a :class:`SystemResult` (backend "amaranth"), stopped by the rules of
    :func:`emulator.system.run_system`."""
    from hdl.system import NOT_REACHED, SystemTop

    if not isinstance(image, SystemImage):
        raise TypeError(f"image must be a SystemImage, not {image!r}")
    cfg = image.mesh_config
    top = SystemTop(image.prefill_config, image.link_config, cfg)
    sim = Simulator(top)
    sim.add_clock(1e-6)
    out = {}
    clock = time.perf_counter()

    async def bench(ctx):
        # Load, with run low.
        for index, command in enumerate(image.commands):
            ctx.set(top.engine_load.en, 1)
            ctx.set(top.engine_load.addr, index)
            ctx.set(top.engine_load.data, command.encode())
            await ctx.tick()
        ctx.set(top.engine_load.en, 0)
        for index, value in dram_words(image):
            ctx.set(top.dram_load.en, 1)
            ctx.set(top.dram_load.addr, index)
            ctx.set(top.dram_load.data, value)
            await ctx.tick()
        ctx.set(top.dram_load.en, 0)
        accept, outputs = image.program.routes.masks()
        for tile in range(cfg.tiles):
            for color in range(cfg.colors):
                if accept[tile][color] or outputs[tile][color]:
                    ctx.set(top.route.valid, 1)
                    ctx.set(top.route.tile, tile)
                    ctx.set(top.route.color, color)
                    ctx.set(top.route.accept, int(accept[tile][color]))
                    ctx.set(top.route.out, int(outputs[tile][color]))
                    await ctx.tick()
        ctx.set(top.route.valid, 0)
        for target, memory in ((0, image.program.imem()), (1, image.program.sram())):
            for address in np.flatnonzero(memory.any(axis=0)):
                ctx.set(top.mesh_load.valid, 1)
                ctx.set(top.mesh_load.target, target)
                ctx.set(top.mesh_load.addr, int(address))
                ctx.set(top.mesh_load.enable, sum(1 << t for t in range(cfg.tiles)
                                                 if memory[t, address]))
                for t in range(cfg.tiles):
                    ctx.set(top.mesh_load.data[t], int(memory[t, address]))
                await ctx.tick()
        ctx.set(top.mesh_load.valid, 0)
        ctx.set(top.message.addr, image.message_addr)
        ctx.set(top.message.words, image.message_words)
        for name in FIELD_BITS:
            ctx.set(getattr(top.command, name), getattr(image.delivery, name))

        # The run.
        ctx.set(top.run, 1)
        cycles, idle, status = 0, 0, None
        while status is None and cycles < max_cycles:
            active, progress = ctx.get(top.mesh_active), ctx.get(top.progress)
            await ctx.tick()
            cycles += 1
            idle = idle + 1 if active and not progress else 0
            if active and (ctx.get(top.mesh_done) or ctx.get(top.trap)):
                idle = 0            # the mesh ends: the next cycle is the run's last
            status = _status(ctx.get(top.phase), idle, stall_limit)
        status = status or "cycle limit"
        ctx.set(top.run, 0)
        events = {name: ctx.get(getattr(top.events, name)) for name in EVENTS}
        out["events"] = {k: (None if v == NOT_REACHED else v) for k, v in events.items()}
        if status == "done" and ctx.get(top.trap):
            status = "trap"
        out["status"] = status
        out["cycles"] = out["events"]["end"] if status in ("done", "trap", "error") else cycles
        out["causes"] = dict(
            error_cause=SystemCause(ctx.get(top.error_cause)),
            engine_error=EngineError(ctx.get(top.engine_error_cause)),
            engine_error_index=ctx.get(top.engine_error_index),
            tx_error=TxError(ctx.get(top.tx_error)),
            delivery_error=DeliveryError(ctx.get(top.delivery_error_cause)))
        out["link"] = {name: ctx.get(getattr(top.link_counters, name)) for name in LINK_COUNTERS}
        tiles, counters = cfg.tiles, len(isa.COUNTERS)
        halted = ctx.get(top.halted)
        out["state"] = dict(
            counters=np.array([[ctx.get(top.counters[t][k]) for k in range(counters)]
                               for t in range(tiles)], dtype=np.uint32),
            halted=np.array([(halted >> t) & 1 for t in range(tiles)], dtype=bool),
            trap_cause=np.array([ctx.get(top.trap_cause[t]) for t in range(tiles)]),
            trap_pc=np.array([ctx.get(top.trap_pc[t]) for t in range(tiles)]),
            pc=np.array([ctx.get(top.pc[t]) for t in range(tiles)]))
        sram = np.zeros((tiles, cfg.sram_words), dtype=np.uint32)
        for address in range(cfg.sram_words):
            ctx.set(top.mesh_peek.addr, address)
            await ctx.tick()
            sram[:, address] = [ctx.get(top.mesh_peek.data[t]) for t in range(tiles)]
        out["sram"] = sram
        W = top.word_bytes
        dram = bytearray()
        for index in range(image.prefill_config.dram_bytes // W):
            ctx.set(top.dram_peek.addr, index)
            await ctx.tick()
            dram += ctx.get(top.dram_peek.data).to_bytes(W, "little")
        out["dram"] = bytes(dram)

    sim.add_testbench(bench)
    sim.run()
    events = out["events"]
    mesh_cycles = 0
    if events["mesh_start"] is not None:
        mesh_cycles = (out["cycles"] if events["end"] is None else events["end"]) \
            - events["mesh_start"]
    mesh = RunResult(cycles=mesh_cycles, sram=out["sram"], **out["state"])
    return SystemResult(status=out["status"], cycles=out["cycles"], events=events, mesh=mesh,
                        dram=out["dram"], link=out["link"], backend="amaranth",
                        seconds=time.perf_counter() - clock, **out["causes"])
