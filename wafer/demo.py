"""The default demo: traffic on the fabric emulator, with a readable report.

Two flows share the mesh: every column's top core multicasts a stream down its column (every
other core of the column gets a copy), and an agent on the west edge of every row streams
along a chain through the row out to the east edge. The demo checks that every copy arrived exactly once and
in order, and reports cycles, latency against the hop count, throughput and link use.
"""

import time

import numpy as np
from rich.console import Console
from rich.table import Table

from emulator import FabricEmulator, TrafficSink, TrafficSource, run
from mesh import MeshConfig, Port, RouteTable, external_links

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


def run_demo(args):
    config = MeshConfig.parse_shape(getattr(args, "mesh", None) or "8x8")
    wavelets = getattr(args, "wavelets", None) or 64
    console = Console()
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
    stray = set(received) - set(expected)
    problems += [f"{links[link]}: received wavelets it should not" for link in sorted(stray)]

    console.rule(f"[bold]Fabric demo: {config.shape} mesh on the emulator")
    console.print(f"{config.tiles} routers, {config.colors} colors, input queues of "
                  f"{config.buffer_depth} wavelets per color; {len(routes)} routes.")
    console.print(f"Color {MULTICAST}: the top core of each of the {config.width} columns "
                  f"multicasts {wavelets} wavelets down its column.")
    console.print(f"Color {CHAIN}: an agent on the west edge of each of the {config.height} rows "
                  f"streams {wavelets} wavelets along the row to the east edge.")

    table = Table(title="Flows")
    for column in ("flow", "copies", "hops", "first arrival", "last arrival", "far-end rate"):
        table.add_column(column, justify="right")
    far_multicast = links.index(next(l for l in links if (l.x, l.y, l.port)
                                     == (0, config.height - 1, Port.RAMP)))
    far_chain = next(l.index for l in links if (l.x, l.y, l.port)
                     == (config.width - 1, 0, Port.E))
    for name, color, far, hops in (("multicast", MULTICAST, far_multicast,
                                    config.height - 1),
                                   ("chain", CHAIN, far_chain, config.width - 1)):
        copies = sum(1 for arrivals in received.values() for _, c, _ in arrivals if c == color)
        arrivals = [cycle for cycle, c, _ in received.get(far, []) if c == color]
        first, last = arrivals[0], arrivals[-1]
        rate = (len(arrivals) - 1) / (last - first) if last > first else 1.0
        table.add_row(name, str(copies), str(hops), f"cycle {first}", f"cycle {last}",
                      f"{rate:.2f}/cycle")
    console.print(table)
    console.print("A wavelet injected in cycle 0 leaves the k-th router of its route in cycle "
                  "k + 1: one cycle per hop.")

    sent = np.zeros((config.height, config.width), dtype=np.int64)
    for _, tile, _, _, _ in events:
        sent[tile // config.width, tile % config.width] += 1
    heat = Table(title=f"Wavelets sent per router over {cycles} cycles (all ports)")
    heat.add_column("y \\ x", justify="right")
    for x in range(config.width):
        heat.add_column(str(x), justify="right")
    for y in range(config.height):
        heat.add_row(str(y), *(str(v) for v in sent[y]))
    console.print(heat)

    console.print(f"Delivered {sum(len(v) for v in received.values())} wavelets in {cycles} "
                  f"cycles; {len(events)} link transfers. Emulator: {cycles / wall:,.0f} "
                  f"cycles/s, {cycles * config.tiles / wall:,.0f} router-cycles/s.")
    if problems:
        console.print("[bold red]FAILED:[/] " + "; ".join(problems))
        return 1
    console.print("[bold green]OK:[/] every copy arrived exactly once, in order.")
    return 0
