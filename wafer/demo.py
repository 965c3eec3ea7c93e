"""The default demo: traffic on the fabric emulator, then a GEMV program on the cores, with a
readable report.

Two flows share the mesh: every column's top core multicasts a stream down its column (every
other core of the column gets a copy), and an agent on the west edge of every row streams
along a chain through the row out to the east edge. The demo checks that every copy arrived exactly once and
in order, and reports cycles, latency against the hop count, throughput and link use.
"""

import json
import time

import numpy as np
from rich.console import Console
from rich.table import Table

from emulator import FabricEmulator, TrafficSink, TrafficSource, run
from mesh import ConfigError, MeshConfig, Port, RouteTable, external_links

MULTICAST, CHAIN = 0, 1


def build_demo(config, wavelets):
    """Routes and streams of the demo: (routes, streams, expected) where expected maps each
    destination external link to the wavelets it must receive, in order."""
    routes = RouteTable(config)
    for x in range(config.width):
        routes.column_multicast(MULTICAST, x, source_y=0)
    for y in range(config.height):
        routes.chain(CHAIN, [(x, y) for x in range(config.width)], source=Port.W, sink=Port.E)
    routes.validate()

    index = {(l.x, l.y, l.port): l.index for l in external_links(config)}
    streams, expected = {}, {}
    for x in range(config.width):
        stream = [(MULTICAST, (x << 16) | i) for i in range(wavelets)]
        streams.setdefault(index[(x, 0, Port.RAMP)], []).extend(stream)
        for y in range(1, config.height):
            expected[index[(x, y, Port.RAMP)]] = stream
    for y in range(config.height):
        stream = [(CHAIN, (1 << 31) | (y << 16) | i) for i in range(wavelets)]
        streams[index[(0, y, Port.W)]] = stream
        expected[index[(config.width - 1, y, Port.E)]] = stream
    return routes, streams, expected


def demo_report(config, wavelets=64):
    """Run the demo on ``config`` and return its report as plain data."""
    if config.width < 2 or config.height < 2:
        raise ConfigError(f"the demo needs a mesh of at least 2x2 (its flows run along rows "
                          f"and columns), not {config.shape}")
    routes, streams, expected = build_demo(config, wavelets)
    links = external_links(config)
    fabric = FabricEmulator(config, routes)
    source = TrafficSource(config, len(links), streams)
    sink = TrafficSink(config, len(links))
    start = time.perf_counter()
    cycles, events = run(fabric, source, sink, max_cycles=100 * wavelets * config.tiles)
    wall = time.perf_counter() - start
    received = sink.received

    problems = []
    for link, stream in expected.items():
        got = [(color, data) for _, color, data in received.get(link, [])]
        if got != stream:
            problems.append(f"{links[link]}: received {len(got)} wavelets, expected "
                            f"{len(stream)} in order")
    problems += [f"{links[link]}: received wavelets it should not"
                 for link in sorted(set(received) - set(expected))]

    far = {MULTICAST: (0, config.height - 1, Port.RAMP), CHAIN: (config.width - 1, 0, Port.E)}
    flows = []
    for name, color, hops in (("multicast", MULTICAST, config.height - 1),
                              ("chain", CHAIN, config.width - 1)):
        far_link = next(l.index for l in links if (l.x, l.y, l.port) == far[color])
        arrivals = [cycle for cycle, c, _ in received.get(far_link, []) if c == color]
        first, last = arrivals[0], arrivals[-1]
        flows.append({
            "flow": name, "color": color, "hops": hops,
            "copies": sum(1 for got in received.values() for _, c, _ in got if c == color),
            "first_arrival": first, "last_arrival": last,
            "far_end_rate": (len(arrivals) - 1) / (last - first) if last > first else 1.0,
        })
    sent = np.zeros((config.height, config.width), dtype=np.int64)
    for _, tile, _, _, _ in events:
        sent[tile // config.width, tile % config.width] += 1
    return {
        "mesh": config.shape, "colors": config.colors, "buffer_depth": config.buffer_depth,
        "routes": len(routes), "wavelets_per_source": wavelets, "cycles": cycles,
        "delivered": sum(len(v) for v in received.values()), "link_transfers": len(events),
        "flows": flows, "sent_per_router": sent.tolist(),
        "emulator_cycles_per_s": cycles / wall,
        "emulator_router_cycles_per_s": cycles * config.tiles / wall,
        "problems": problems, "ok": not problems,
    }


def gemv_report(config):
    """GEMV (``programs.kernels.gemv``: W tiled over the cores, half of each core's SRAM) on
    the emulator: cycles, MAC rate against the peak, and whether y equals numpy."""
    from programs.kernels import gemv

    from .backends import run

    k = gemv(config)
    outcome = run(k.program, "emulator")
    problems = [outcome.message] if outcome.status != "done" else k.check(outcome.result)
    m, n = k.sizes["rows_per_core"] * config.height, k.sizes["cols_per_core"] * config.width
    return {"shape": [m, n], "cycles": outcome.result.cycles, "macs": k.macs,
            "mac_utilization": k.utilization(outcome.result.cycles),
            "emulator_cycles_per_s": outcome.cycles_per_second,
            "problems": problems, "ok": not problems}


def run_demo(args):
    """``wafer demo``: ``args.mesh`` a "WxH" string or None, ``args.json`` a bool."""
    config = MeshConfig.parse_shape(args.mesh or "8x8")
    report = demo_report(config)
    report["gemv"] = gemv_report(config)
    report["ok"] = report["ok"] and report["gemv"]["ok"]
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        _render(report, config)
        _render_gemv(report["gemv"], config)
    return 0 if report["ok"] else 1


def _render_gemv(report, config):
    console = Console()
    m, n = report["shape"]
    console.rule(f"[bold]GEMV on the {config.shape} mesh's cores (emulator)")
    console.print(f"y = W x with W {m} x {n} int8 tiled over the cores (half of each core's "
                  f"SRAM), x multicast down the columns, partial sums reduced along the rows.")
    console.print(f"{report['cycles']:,} cycles for {report['macs']:,} MACs: "
                  f"{100 * report['mac_utilization']:.1f}% of the peak of 4 MACs per core per "
                  f"cycle; emulator {report['emulator_cycles_per_s']:,.0f} cycles/s.")
    if report["problems"]:
        console.print("[bold red]FAILED:[/] " + "; ".join(report["problems"]))
    else:
        console.print("[bold green]OK:[/] y equals numpy.")


def _render(report, config):
    console = Console()
    console.rule(f"[bold]Fabric demo: {config.shape} mesh on the emulator")
    console.print(f"{config.tiles} routers, {config.colors} colors, input queues of "
                  f"{config.buffer_depth} wavelets per color; {report['routes']} routes.")
    wavelets = report["wavelets_per_source"]
    console.print(f"Color {MULTICAST}: the top core of each of the {config.width} columns "
                  f"multicasts {wavelets} wavelets down its column.")
    console.print(f"Color {CHAIN}: an agent on the west edge of each of the {config.height} rows "
                  f"streams {wavelets} wavelets along the row to the east edge.")

    table = Table(title="Flows (arrivals at the far end)")
    for column in ("flow", "copies", "hops", "first arrival", "last arrival", "rate"):
        table.add_column(column, justify="right")
    for flow in report["flows"]:
        table.add_row(flow["flow"], str(flow["copies"]), str(flow["hops"]),
                      f"cycle {flow['first_arrival']}", f"cycle {flow['last_arrival']}",
                      f"{flow['far_end_rate']:.2f}/cycle")
    console.print(table)
    console.print("A wavelet injected in cycle 0 leaves the k-th router of its route in cycle "
                  "k + 1: one cycle per hop.")

    heat = Table(title=f"Wavelets sent per router over {report['cycles']} cycles (all ports)")
    heat.add_column("y \\ x", justify="right")
    for x in range(config.width):
        heat.add_column(str(x), justify="right")
    for y, row in enumerate(report["sent_per_router"]):
        heat.add_row(str(y), *(str(v) for v in row))
    console.print(heat)

    console.print(f"Delivered {report['delivered']} wavelets in {report['cycles']} cycles; "
                  f"{report['link_transfers']} link transfers. Emulator: "
                  f"{report['emulator_cycles_per_s']:,.0f} cycles/s, "
                  f"{report['emulator_router_cycles_per_s']:,.0f} router-cycles/s.")
    if report["problems"]:
        console.print("[bold red]FAILED:[/] " + "; ".join(report["problems"]))
    else:
        console.print("[bold green]OK:[/] every copy arrived exactly once, in order.")
