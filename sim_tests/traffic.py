"""A test bench for a whole design (the single router or the fabric) on top of :mod:`tb`:
a driver on every inbound external link that the routes accept traffic from, a monitor on every
outbound external link, a scoreboard fed from the route table, latency checks, and an exact
cycle-by-cycle comparison with ``emulator.FabricEmulator`` replaying the same agent decisions.
"""

import os

from . import designs
from .tb import TB, Scoreboard, _Writer, never

__all__ = ["MeshBench", "RouteWriter", "load_emulator"]


class RouteWriter:
    """Drives the route write port (section 6): one queued write per cycle, ``valid`` low
    otherwise. ``writes`` records ``(cycle, tile, color, accept, out)``."""

    def __init__(self, dut, *, has_tile):
        self._valid = _Writer(dut.route__valid)
        self._color = _Writer(dut.route__color)
        self._accept = _Writer(dut.route__accept)
        self._out = _Writer(dut.route__out)
        self._tile = _Writer(dut.route__tile) if has_tile else None
        self.queue = []
        self.writes = []

    def write(self, tile, color, accept, out):
        self.queue.append((tile, color, accept, out))

    @property
    def idle(self):
        return not self.queue

    def drive(self, cycle):
        if not self.queue:
            self._valid.set(0)
            return
        tile, color, accept, out = self.queue.pop(0)
        self._valid.set(1)
        if self._tile is not None:
            self._tile.set(tile)
        self._color.set(color)
        self._accept.set(accept)
        self._out.set(out)
        self.writes.append((cycle, tile, color, accept, out))

    def sample(self, cycle):
        pass


def load_emulator():
    """``(FabricEmulator class, None)``, or ``(None, reason)`` when it is unavailable or
    disabled with ``SIM_TESTS_EMULATOR=0``."""
    if os.environ.get("SIM_TESTS_EMULATOR", "1").strip().lower() in ("0", "false", "no", "off"):
        return None, "disabled by SIM_TESTS_EMULATOR=0"
    try:
        import emulator
        cls = getattr(emulator, "FabricEmulator", None)
        if cls is None:
            from emulator.fabric import FabricEmulator as cls
    except Exception as error:  # not written yet, or broken: fall back to the scoreboard
        return None, f"emulator.FabricEmulator unavailable ({type(error).__name__}: {error})"
    return cls, None


class MeshBench(TB):
    """A :class:`TB` for a design described by ``config``, route ``table`` and ``endpoints``
    (see :mod:`designs`). ``driver_pause(link_index)`` and ``monitor_pause(link_index)`` make
    each agent's pause generator (default: never pause). ``drive_all=True`` puts a driver on
    every inbound link (otherwise links that no route accepts are tied to idle)."""

    def __init__(self, dut, config, table, endpoints, *, router=False, driver_pause=None,
                 monitor_pause=None, drive_all=False):
        super().__init__(dut, config)
        self.table = table
        self.endpoints = endpoints
        self.router = router
        self.sources = {(link.index, color): dest
                        for link, color, dest in designs.sources(config, table)}
        source_links = {index for index, _ in self.sources}
        self.scoreboard = Scoreboard("delivery (per destination, source and color, in order)")
        self.drv = {}
        self.mon = {}
        self._seq = {}
        self.routes = RouteWriter(dut, has_tile=not router)
        self.components.append(self.routes)
        for ep in endpoints:
            if drive_all or ep.index in source_links:
                pause = driver_pause(ep.index) if driver_pause else never()
                self.drv[ep.index] = self.driver(ep.inbound, pause=pause,
                                                 name=f"{ep.inbound} ({ep.link})")
            else:
                self.tie_off(f"{ep.inbound}__valid", f"{ep.inbound}__color",
                             f"{ep.inbound}__data")
            pause = monitor_pause(ep.index) if monitor_pause else never()
            self.mon[ep.index] = self.monitor(ep.outbound, pause=pause,
                                              name=f"{ep.outbound} ({ep.link})",
                                              callback=self._received)
            self.mon[ep.index].link_index = ep.index

    # Traffic --------------------------------------------------------------------------------

    def send(self, link, color, count=1, rng=None):
        """Queue ``count`` wavelets of ``color`` on inbound external link index ``link`` and
        expect each, in order, at every destination the routes give. Returns their data words."""
        dest = self.sources.get((link, color), {})
        words = []
        for _ in range(count):
            seq = self._seq.get((link, color), 0)
            self._seq[(link, color)] = seq + 1
            data = designs.encode(link, seq, rng)
            self.drv[link].send(color, data)
            for d in dest:
                self.scoreboard.expect((d, link, color), data)
            words.append(data)
        return words

    def _received(self, monitor, cycle, color, data):
        dest = monitor.link_index
        source, _ = designs.decode(data)
        self.scoreboard.receive((dest, source, color), data,
                                context=f"cycle {cycle} at {monitor.name}: ")

    def quiet(self):
        return super().quiet() and self.routes.idle

    def status(self):
        lines = super().status()
        waiting = [(key, len(q)) for key, q in self.scoreboard.expected.items() if q]
        if waiting:
            shown = ", ".join(f"{n} for link {d} from link {s} color {c}"
                              for (d, s, c), n in waiting[:8])
            lines.append(f"scoreboard still expects {sum(n for _, n in waiting)}: {shown}")
        return lines

    # Checks ---------------------------------------------------------------------------------

    def arrivals(self, link, color=None):
        """``{data: cycle}`` of what outbound link ``link`` received (optionally one color)."""
        return {d: t for t, c, d in self.mon[link].received if color is None or c == color}

    def injections(self, link, color=None):
        return {d: t for t, c, d in self.drv[link].sent if color is None or c == color}

    def check_latency(self, link, color, *, contiguous=True):
        """Every wavelet of ``color`` injected on ``link`` arrived at each destination exactly
        ``routers`` cycles after injection (no contention), and, if ``contiguous``, the stream
        was injected and delivered at one wavelet per cycle."""
        sent = self.injections(link, color)
        assert sent, f"nothing of color {color} was injected on link {link}"
        cycles = sorted(sent.values())
        if contiguous:
            assert cycles == list(range(cycles[0], cycles[0] + len(cycles))), \
                f"link {link} color {color}: injection was not one wavelet per cycle: {cycles}"
        for dest, routers in self.sources[(link, color)].items():
            got = self.arrivals(dest, color)
            for data, t in sent.items():
                assert data in got, f"{data:#x} from link {link} never reached link {dest}"
                assert got[data] == t + routers, (
                    f"{data:#x} from link {link} color {color}: injected in cycle {t}, "
                    f"arrived at {self.mon[dest].name} in cycle {got[data]}, expected "
                    f"{t + routers} ({routers} router(s), one cycle each)")

    def check_scoreboard(self):
        self.scoreboard.check()

    def compare_with_emulator(self, *, required=False):
        """Replay every agent decision of this run (injections, returned credits, route writes)
        into ``emulator.FabricEmulator`` and compare, cycle by cycle, every wavelet on every
        outbound external link and every credit on every driven inbound link. Returns the
        number of cycles compared, or None when the emulator is unavailable."""
        import numpy as np

        cls, reason = load_emulator()
        if cls is None:
            if required:
                raise AssertionError(reason)
            self.log.warning("no emulator comparison: %s", reason)
            return None
        cfg = self.config
        cycles = self.cycle  # cycles 0 .. cycle-1 are complete (sampled)
        n = len(self.endpoints)
        in_valid = np.zeros((cycles, n), dtype=bool)
        in_color = np.zeros((cycles, n), dtype=np.intp)
        in_data = np.zeros((cycles, n), dtype=np.uint32)
        out_credit = np.zeros((cycles, n, cfg.colors), dtype=bool)
        for index, drv in self.drv.items():
            for t, c, d in drv.sent:
                if t < cycles:
                    in_valid[t, index], in_color[t, index], in_data[t, index] = True, c, d
        for index, mon in self.mon.items():
            for t, bits in mon.credit_log:
                if t < cycles:
                    out_credit[t, index] = [(bits >> c) & 1 for c in range(cfg.colors)]
        writes = {}
        for t, tile, color, accept, out in self.routes.writes:
            writes.setdefault(t, []).append((tile, color, accept, out))

        rtl_out = {}
        for index, mon in self.mon.items():
            for t, c, d in mon.received:
                rtl_out[(t, index)] = (c, d)
        rtl_credit = {}
        for index, drv in self.drv.items():
            for t, bits in drv.credit_log:
                rtl_credit[(t, index)] = bits

        emu = cls(cfg, self.table)
        problems = []
        for t in range(cycles):
            try:
                result = emu.step(in_valid[t], in_color[t], in_data[t], out_credit[t])
            except Exception as error:
                problems.append(f"cycle {t}: the emulator rejected the replayed agent inputs: "
                                f"{type(error).__name__}: {error}")
                break
            for tile, color, accept, out in writes.get(t, ()):
                emu.write_route(tile, color, accept, out)  # takes effect from the next cycle
            valid = result.out_valid
            for index in range(n):
                want = (int(result.out_color[index]), int(result.out_data[index])) \
                    if valid[index] else None
                got = rtl_out.get((t, index))
                if want != got:
                    problems.append(f"cycle {t} {self.endpoints[index].outbound}: emulator "
                                    f"{_fmt(want)}, RTL {_fmt(got)}")
            for index in self.drv:
                want = sum(1 << c for c in range(cfg.colors) if result.in_credit[index, c])
                got = rtl_credit.get((t, index), 0)
                if want != got:
                    problems.append(f"cycle {t} {self.endpoints[index].inbound}__credit: "
                                    f"emulator {want:#x}, RTL {got:#x}")
            if problems:
                break  # after a divergence the replayed decisions no longer fit the emulator
        if problems:
            raise AssertionError(
                f"RTL and emulator differ (same agent decisions replayed), first divergent "
                f"cycle {t}:\n  " + "\n  ".join(problems[:16]))
        self.log.info("RTL matches emulator.FabricEmulator exactly over %d cycles", cycles)
        return cycles


def _fmt(wavelet):
    if wavelet is None:
        return "idle"
    return f"color {wavelet[0]} data {wavelet[1]:#010x}"
