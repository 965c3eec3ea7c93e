"""``wafer bench link``: the packet link (docs/ARCHITECTURE.md section 12) on its emulator
(:class:`emulator.link.LinkEmulator`): goodput and message completion time against the loss
rate, the lane count and the message size, for the selective-retransmission link and the
go-back-N baseline in the same run, several seeds per point.

**Faults.** A point's loss rate p is the drop probability of every packet in both directions of
every lane (``FaultConfig(drop=p)``: DATA, ACK and NACK packets alike); no flips, duplicates or
reorders. Seed s gives both modes the same channel draws per packet entering a channel (the
packets differ once the modes diverge).

**Measures.** ``goodput``: payload bits per cycle over the line rate (lanes x lane_width), over
the message's span, from the cycle the sender takes the command to its ``done``:
8 x length / (done - start) / line_rate (:attr:`emulator.link.LinkResult.goodput`).
``tx_cycles`` = done - start, the sender's completion time; ``rx_cycles``, the receiver's
``done`` - start. Per point, the mean and the min of goodput over the seeds (and the mean and the
max of the cycles); a run that fails (the sender's TxError, RETRY_LIMIT or LANES_DEAD) is
reported with its error and left out of the means. The ceiling is the header and CRC overhead,
``LinkConfig.efficiency()`` = P / (P + 5), 96.2% at the default P = 128.

**Closed form without faults** (tests/test_link_emulator.py,
test_full_packets_on_every_lane_closed_form). With T = k x L full packets on L lanes (r cycles
per word, latency Lat, N = P + 5 words per packet), lane l takes packets l, l + L, .. back to
back, round i in cycle 1 + i N r; a lone packet taken in cycle 1 is done in
D = 6 + 2 (N - 1) r + 8 r + 2 Lat; the last round's L ACKs arrive together and are released one
per cycle: done = (k - 1) N r + D + L - 1. This holds while the window never stalls a lane:
round i's packets may be taken once base >= (i + 1) L - W, and every round i' with
(i - i') N r >= D + L - 2 is released by then, so W >= m L with m = ceil((D + L - 2) / (N r))
suffices (m = 3 at the defaults: 12 <= 32). Its goodput tends to P / N x N r k / (N r k + D)
-> the ceiling. :func:`closed_form_cycles` gives it, None where it does not apply.

Every run's receive buffer is compared with the message, word for word: a difference (or a
transfer that neither finishes nor fails, :class:`emulator.link.LinkStalled`) is a
:class:`LinkMismatch`, exit status 1.
"""

import time
from dataclasses import dataclass

import numpy as np

from emulator.channel import FaultConfig
from emulator.link import MODES, LinkEmulator, LinkStalled
from mesh.link import LinkConfig, TxError

__all__ = ["LinkSweep", "LinkMismatch", "run_link_sweep", "render_link", "plot_link",
           "closed_form_cycles", "bench_config", "DEFAULT_JSON", "DEFAULT_PLOT", "QUICK",
           "KiB", "MiB"]

DEFAULT_JSON = "results/bench_link.json"
DEFAULT_PLOT = "results/bench_link.png"
KiB, MiB = 1 << 10, 1 << 20

# A short sweep (``--quick`` and the tests): small messages, 1 and 4 lanes, no loss and 5%.
QUICK = dict(sizes=(4 * KiB, 16 * KiB), lanes=(1, 4), drops=(0.0, 0.05), seeds=(1, 2))


class LinkMismatch(RuntimeError):
    """A run whose receive buffer differs from the message, or that stalled."""


@dataclass
class LinkSweep:
    """The points: every (size, lanes, drop) for each mode and seed. ``sizes`` in bytes
    (multiples of 4, at most 4 MiB: the largest receive buffer). The link is ``LinkConfig``'s
    defaults but for ``lanes`` and ``lane_width`` (latency 20, 128-word payloads, window 32,
    the default timeout)."""
    sizes: tuple = (16 * KiB, 256 * KiB, 1 * MiB)
    lanes: tuple = (1, 2, 4)
    drops: tuple = (0.0, 0.001, 0.01, 0.05)
    seeds: tuple = (1, 2, 3, 4)
    modes: tuple = MODES
    lane_width: int = 32

    def runs(self):
        return (len(self.sizes) * len(self.lanes) * len(self.drops) * len(self.modes)
                * len(self.seeds))

    def check(self):
        """Raises ValueError (ConfigError) for a size or lane count the link cannot take."""
        if not self.runs():
            raise ValueError("nothing to run: a list of sizes, lanes, drops, seeds or modes "
                             "is empty")
        for size in self.sizes:
            if size <= 0 or size % 4 or size > 4 * MiB:
                raise ValueError(f"message size {size} bytes: must be a positive multiple of 4, "
                                 f"at most 4 MiB (the largest receive buffer)")
        for lanes in self.lanes:
            bench_config(self, lanes, max(self.sizes))
        for drop in self.drops:
            FaultConfig(drop=drop)
        for mode in self.modes:
            if mode not in MODES:
                raise ValueError(f"mode must be one of {MODES}, not {mode!r}")


def bench_config(sweep, lanes, size):
    """The link of a point: defaults, ``lanes`` lanes, buffers holding ``size`` bytes."""
    words = max(16, 1 << max(0, size // 4 - 1).bit_length())
    return LinkConfig(lanes=lanes, lane_width=sweep.lane_width, buffer_words=words,
                      source_words=words)


def closed_form_cycles(config, length):
    """The sender's done cycle (from a command taken in cycle 0) of a message of ``length``
    bytes without faults, where the closed form of the module applies: T = k x lanes full
    packets and a window that never stalls a lane (W >= m x lanes). None elsewhere."""
    L, P, r, W = config.lanes, config.max_payload, config.word_cycles, config.window
    words = length // 4
    if length % 4 or words % P or (words // P) % L:
        return None
    N, k = P + 5, words // P // L
    D = 6 + 2 * (N - 1) * r + 8 * r + 2 * config.latency
    m = -(-(D + L - 2) // (N * r))
    if W < m * L:
        return None
    return (k - 1) * N * r + D + L - 1


def message(size, seed):
    """The message of a point: ``size`` bytes, seeded."""
    return np.random.default_rng([seed, size]).integers(0, 1 << 32, size // 4, dtype=np.uint64
                                                        ).astype(np.uint32)


def run_point(sweep, mode, lanes, size, drop, seed, data=None):
    """One run on a fresh emulator; its JSON entry. Raises :class:`LinkMismatch` if the
    receive buffer differs from the message or the transfer stalls."""
    config = bench_config(sweep, lanes, size)
    data = message(size, seed) if data is None else data
    faults = FaultConfig(drop=drop) if drop else None
    label = f"{mode}, {lanes} lane{'s' * (lanes > 1)}, {size:,} bytes, drop {drop}, seed {seed}"
    emulator = LinkEmulator(config, faults, seed=seed, mode=mode)
    start = time.perf_counter()
    try:
        result = emulator.send(data)
    except LinkStalled as error:
        raise LinkMismatch(f"{label}: {error}") from None
    seconds = time.perf_counter() - start
    delivered = result.ok and np.array_equal(result.words, data)
    if (result.ok or result.rx_done_cycle is not None) and not np.array_equal(result.words,
                                                                               data):
        wrong = int(np.count_nonzero(result.words != data))
        raise LinkMismatch(f"{label}: the receiver is done but {wrong} of {len(data)} words "
                           f"of the receive buffer differ from the message")
    if not result.ok and result.error == TxError.NONE:
        raise LinkMismatch(f"{label}: ended without an error and without being done")
    start_cycle = result.start_cycle
    entry = {
        "mode": mode, "lanes": lanes, "size": size, "drop": drop, "seed": seed,
        "delivered": delivered,
        "error": None if delivered else result.error.name,
        "error_message": result.error_message or None,
        "goodput": result.goodput if delivered else None,
        "tx_cycles": result.done_cycle - start_cycle if delivered else None,
        "rx_cycles": result.rx_done_cycle - start_cycle if delivered else None,
        "closed_form_cycles": closed_form_cycles(config, size) if not drop else None,
        "packets": -(-size // (4 * config.max_payload)),
        "sent": result.sent, "retransmits": result.retransmits, "timeouts": result.timeouts,
        "nacks": result.nacks_sent, "nack_repeats": result.nack_repeats,
        "channel_drops": result.channels["dropped"],
        "lanes_dead": result.lanes_dead,
        "cycles_simulated": result.cycles, "seconds": seconds,
    }
    return entry


def _summary(sweep, runs):
    """Per (mode, lanes, size, drop): the seeds' mean and min goodput, mean and max cycles."""
    points = []
    for size in sweep.sizes:
        for lanes in sweep.lanes:
            config = bench_config(sweep, lanes, size)
            for mode in sweep.modes:
                for drop in sweep.drops:
                    mine = [r for r in runs if (r["mode"], r["lanes"], r["size"], r["drop"])
                            == (mode, lanes, size, drop)]
                    ok = [r for r in mine if r["delivered"]]
                    point = {"mode": mode, "lanes": lanes, "size": size, "drop": drop,
                             "runs": len(mine), "delivered": len(ok),
                             "errors": sorted({r["error"] for r in mine if r["error"]}),
                             "ceiling": config.efficiency(),
                             "closed_form_cycles": None if drop else
                             closed_form_cycles(config, size)}
                    if ok:
                        goodput = [r["goodput"] for r in ok]
                        tx = [r["tx_cycles"] for r in ok]
                        rx = [r["rx_cycles"] for r in ok]
                        point.update(
                            goodput_mean=float(np.mean(goodput)), goodput_min=min(goodput),
                            tx_cycles_mean=float(np.mean(tx)), tx_cycles_max=max(tx),
                            tx_cycles_min=min(tx), rx_cycles_mean=float(np.mean(rx)),
                            rx_cycles_max=max(rx))
                    for name in ("retransmits", "timeouts", "nack_repeats"):
                        point[f"{name}_mean"] = float(np.mean([r[name] for r in mine]))
                    points.append(point)
    return points


def run_link_sweep(sweep, progress=None):
    """Run the sweep; returns the JSON-ready report. ``progress``: a rich Progress or None.
    Raises :class:`LinkMismatch` for a run that does not deliver byte for byte."""
    task = progress.add_task("link", total=sweep.runs()) if progress else None
    start = time.perf_counter()
    runs = []
    for size in sweep.sizes:
        for seed in sweep.seeds:
            data = message(size, seed)
            for lanes in sweep.lanes:
                for drop in sweep.drops:
                    for mode in sweep.modes:
                        if progress:
                            progress.update(task, description=f"{mode} {lanes}L {size // KiB}"
                                                              f" KiB p={drop} s={seed}")
                        runs.append(run_point(sweep, mode, lanes, size, drop, seed, data))
                        if progress:
                            progress.advance(task)
    config = bench_config(sweep, max(sweep.lanes), max(sweep.sizes))
    seconds = time.perf_counter() - start
    simulated = sum(r["cycles_simulated"] for r in runs)
    return {
        "benchmark": "link", "simulator": "emulator.link.LinkEmulator",
        "link": {"lane_width": config.lane_width, "latency": config.latency,
                 "max_payload": config.max_payload, "window": config.window,
                 "timeout": config.effective_timeout, "nack_gap": config.nack_gap,
                 "ack_queue": config.ack_queue, "retry_limit": config.retry_limit,
                 "lane_dead_after": config.lane_dead_after},
        "faults": "drop probability p per packet, both directions of every lane",
        "ceiling": config.efficiency(),
        "ceiling_formula": "LinkConfig.efficiency() = max_payload / (max_payload + 5): header "
                           "(4 words) and CRC (1 word) per packet",
        "goodput_formula": "8 x length / (done - start) / (lanes x lane_width): payload bits "
                           "per cycle over the line rate, start = the cycle the command is "
                           "taken, done = the sender's done",
        "sizes": list(sweep.sizes), "lanes": list(sweep.lanes), "drops": list(sweep.drops),
        "seeds": list(sweep.seeds), "modes": list(sweep.modes),
        "points": _summary(sweep, runs), "runs": runs,
        "failed_runs": sum(not r["delivered"] for r in runs),
        "cycles_simulated": simulated, "seconds": seconds,
        "cycles_per_second": simulated / seconds if seconds else 0.0,
    }


def plot_link(report, path):
    """Goodput (mean over the seeds, a bar down to the min) against the loss rate, one line per
    (mode, lanes), for the largest message size; the ceiling dashed. Writes a PNG at
    ``path``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = max(report["sizes"])
    figure, axes = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    colors = plt.get_cmap("tab10")
    for k, lanes in enumerate(report["lanes"]):
        for mode in report["modes"]:
            points = [p for p in report["points"] if p["size"] == size and p["lanes"] == lanes
                      and p["mode"] == mode and "goodput_mean" in p]
            if not points:
                continue
            x = [p["drop"] for p in points]
            mean = np.array([100 * p["goodput_mean"] for p in points])
            low = np.maximum(mean - np.array([100 * p["goodput_min"] for p in points]), 0)
            axes.errorbar(x, mean, yerr=[low, np.zeros_like(low)], color=colors(k),
                          linestyle="-" if mode == "selective" else "--",
                          marker="o" if mode == "selective" else "s", capsize=3,
                          label=f"{'selective' if mode == 'selective' else 'go-back-N'}, "
                                f"{lanes} lane{'s' * (lanes > 1)}")
    axes.axhline(100 * report["ceiling"], color="grey", linestyle=":",
                 label=f"header + CRC ceiling {100 * report['ceiling']:.1f}%")
    axes.set_xscale("symlog", linthresh=1e-3)
    axes.set_xlim(-3e-4, 1.4 * max(max(report["drops"]), 1e-3))
    axes.set_xticks(report["drops"])
    axes.set_xticklabels([f"{d:g}" for d in report["drops"]])
    axes.set_ylim(0, 100)
    axes.set_xlabel("drop probability per packet (both directions; symlog scale)")
    axes.set_ylabel("goodput, % of line rate")
    axes.set_title(f"Packet link goodput, {_size(size)} messages (mean over "
                   f"{len(report['seeds'])} seeds, bar to the min)")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8, loc="lower left")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _size(size):
    if size % MiB == 0:
        return f"{size // MiB} MiB"
    if size % KiB == 0:
        return f"{size // KiB} KiB"
    return f"{size:,} B"


def _mode(mode):
    return "selective" if mode == "selective" else "go-back-N"


def _cell(point, text):
    if point["delivered"] < point["runs"]:
        failed = point["runs"] - point["delivered"]
        text = f"{text} ({failed} failed: {', '.join(point['errors'])})"
    return text


def render_link(report, console):
    from rich.table import Table

    drops = report["drops"]
    seeds = len(report["seeds"])
    rows = {}
    for p in report["points"]:
        rows.setdefault((p["size"], p["lanes"], p["mode"]), {})[p["drop"]] = p

    goodput = Table(title=f"Packet link goodput, % of line rate: mean / min over {seeds} seeds "
                          f"(drop p per packet, both directions, every lane); ceiling = header "
                          f"+ CRC bound, LinkConfig.efficiency()")
    cycles = Table(title="Message completion, cycles from the command to the sender's done: "
                         "mean / max over the seeds")
    rx_cycles = Table(title="Cycles from the command to the receiver's done: mean / max")
    recovery = Table(title="Recovery per run (mean): retransmissions / timeouts / NACKs repeated "
                           "for a lost retransmission")
    tables = (goodput, cycles, rx_cycles, recovery)
    for table in tables:
        for column in ("size", "lanes", "mode"):
            table.add_column(column, no_wrap=True)
    goodput.add_column("ceiling", justify="right")
    for drop in drops:
        for table in tables:
            table.add_column(f"p = {drop:g}", justify="right", no_wrap=True)
    for (size, lanes, mode), by_drop in rows.items():
        head = [_size(size), str(lanes), _mode(mode)]
        ceiling = next(iter(by_drop.values()))["ceiling"]
        g, c, x, r = [], [], [], []
        for drop in drops:
            p = by_drop[drop]
            if "goodput_mean" in p:
                g.append(_cell(p, f"{100 * p['goodput_mean']:.1f} / {100 * p['goodput_min']:.1f}"))
                c.append(_cell(p, f"{p['tx_cycles_mean']:,.0f} / {p['tx_cycles_max']:,}"))
                x.append(_cell(p, f"{p['rx_cycles_mean']:,.0f} / {p['rx_cycles_max']:,}"))
            else:
                g.append(_cell(p, "-"))
                c.append(_cell(p, "-"))
                x.append(_cell(p, "-"))
            r.append(f"{p['retransmits_mean']:.1f} / {p['timeouts_mean']:.1f} / "
                     f"{p['nack_repeats_mean']:.1f}")
        goodput.add_row(*head, f"{100 * ceiling:.1f}", *g)
        cycles.add_row(*head, *c)
        rx_cycles.add_row(*head, *x)
        recovery.add_row(*head, *r)
    for table in tables:
        console.print(table)
    link = report["link"]
    closed = [p for p in report["points"] if p["closed_form_cycles"] is not None
              and "tx_cycles_mean" in p]
    exact = all(p["tx_cycles_min"] == p["tx_cycles_max"] == p["closed_form_cycles"]
                for p in closed)
    closed_text = (f"Without faults the sender's done equals the closed form (k - 1) N r + D + "
                   f"L - 1 at all {len(closed)} points where it applies. " if closed and exact
                   else "")
    console.print(
        f"Link: {link['lane_width']}-bit lanes, latency {link['latency']}, {link['max_payload']}"
        f"-word payloads, window {link['window']}, timeout {link['timeout']:,}, nack_gap "
        f"{link['nack_gap']}. {closed_text}{report['failed_runs']} of {len(report['runs'])} "
        f"runs failed with a sender error; every other run delivered byte for byte. "
        f"{report['cycles_simulated']:,} cycles simulated in {report['seconds']:.1f} s "
        f"({report['cycles_per_second']:,.0f} cycles/s).", highlight=False)
    if report.get("plot"):
        console.print(f"Plot: {report['plot']}", highlight=False)
