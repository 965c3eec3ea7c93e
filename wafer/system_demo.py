"""``wafer run`` without a PROGRAM: disaggregated inference of the tiny transformer end to end on
the emulators (:func:`programs.system.run_disaggregated`): the prompt's prefill on the prefill
engine, its KV cache and first token over the packet link, delivered into the mesh, the decode
loop on the mesh. Prints the answer (checked against the integer reference and the task), the
cycles of every phase, time to first token, tokens per second at a stated nominal clock, and
counters; ``--json`` prints the report as JSON. Exit status 1 if the tokens differ from
``IntModel.generate_int``.
"""

import json

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from mesh import ConfigError, MeshConfig

__all__ = ["system_command", "DEFAULT_PROMPT", "DEFAULT_MESH"]

DEFAULT_PROMPT = "123+459="
DEFAULT_MESH = "4x4"

# Options of ``wafer run PROGRAM`` that mean nothing to the demo, and their defaults.
_PROGRAM_ONLY = {"size": None, "waves": None, "max_cycles": 1_000_000, "stall_limit": 200}


def _check(args):
    """The demo's arguments as run_disaggregated's, or ConfigError (a usage error)."""
    from programs.transformer import task

    for name, default in _PROGRAM_ONLY.items():
        if getattr(args, name, default) != default:
            option = "--" + name.replace("_", "-")
            raise ConfigError(f"{option} applies to wafer run PROGRAM, not to the "
                              f"disaggregated demo (wafer run without PROGRAM)")
    if args.backend not in ("emulator", "verilator"):
        raise ConfigError(f"the disaggregated demo runs on the emulator or on verilator (the "
                          f"RTL system top, checked equal to the emulator), not on "
                          f"{args.backend}: a whole run is far too slow for the Amaranth "
                          f"simulator")
    if args.backend != "emulator" and args.drop:
        raise ConfigError("--drop: link faults are modelled on the emulator only (the RTL "
                          "system's channels are fault-free)")
    try:
        task.parse_prompt(args.prompt)
    except ValueError as error:
        raise ConfigError(f"--prompt: {error}") from None
    config = MeshConfig.parse_shape(args.mesh or DEFAULT_MESH)
    if not args.clock_mhz > 0:
        raise ConfigError(f"--clock-mhz must be positive, not {args.clock_mhz}")
    if not 0 <= args.drop < 1:
        raise ConfigError(f"--drop must be a probability from 0 to below 1, not {args.drop}")
    return config


def system_command(args):
    """Run the demo with parsed ``args`` (prompt, mesh, backend, json, clock_mhz, drop, seed);
    return the exit status."""
    from emulator.channel import FaultConfig
    from programs import system
    from programs.mesh_decode import PlacementError

    config = _check(args)
    faults = FaultConfig(drop=args.drop) if args.drop else None
    console = Console(stderr=args.json, soft_wrap=True)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True,
                  disable=not console.is_terminal) as progress:
        task_id = progress.add_task(f"{args.prompt} on the system", total=None)

        def show(phase, cycle):
            text = f"{args.prompt}: {phase}" + (f", cycle {cycle:,}" if cycle else "")
            progress.update(task_id, description=text)
        try:
            run = system.run_disaggregated(args.prompt, config, faults=faults, seed=args.seed,
                                           backend=args.backend, progress=show)
        except PlacementError as error:
            raise ConfigError(str(error).splitlines()[0]) from None
        except system.SystemFailure as error:
            console.print(f"FAILED: {error}", style="bold red", markup=False, highlight=False)
            return 1
        single = None
        if getattr(args, "compare", False):
            try:
                single = system.run_single_engine(args.prompt, progress=show)
            except ImportError as error:
                raise ConfigError(f"--compare needs programs.decode_baseline: {error}") from None
    data = run.report(args.clock_mhz)
    if single is not None:
        data["single_engine"] = single.report(args.clock_mhz)
    if args.json:
        print(json.dumps(data, indent=1))
    else:
        render(console, data)
        if single is not None:
            render_comparison(console, data)
    return 0 if run.exact and (single is None or single.exact) else 1


def _n(value):
    return f"{value:,}"


def render(console, data):
    """The readable report of :meth:`programs.system.SystemRun.report` data."""
    from programs.transformer import task

    ph = data["phases"]
    pre, tr, dec = ph["prefill"], ph["transfer"], ph["decode"]
    link, dl = tr["link"], tr["delivery"]
    mhz = data["clock_mhz"]
    us = lambda cycles: f"{cycles / mhz:,.3f}"
    console.print(f"[bold]Disaggregated inference[/] on the {data['backend']}: prefill engine "
                  f"({pre['array']} array) -> packet link ({link.get('lanes', '-')} lanes) -> "
                  f"{data['mesh']} mesh (decode)", highlight=False)
    console.print(f"prompt: {data['prompt']}", markup=False, highlight=False)
    tokens = " ".join("END" if t == task.END else str(t) for t in data["tokens"])
    verdict = "correct" if data["correct"] else "WRONG (the task's answer differs)"
    console.print(f"answer: {data['answer']}   (tokens {tokens}: digits least significant "
                  f"first) {verdict}", markup=False, highlight=False,
                  style="green" if data["correct"] else "yellow")
    if data["exact"]:
        console.print("tokens: equal to the integer reference (IntModel.generate_int)",
                      style="green")
    else:
        ref = " ".join("END" if t == task.END else str(t) for t in data["reference"])
        console.print(f"MISMATCH: the integer reference generates {ref}", style="bold red",
                      markup=False, highlight=False)

    table = Table(title=f"phases, one after another (no overlap); us at {mhz:g} MHz (a nominal "
                        f"clock)", title_justify="left")
    for column in ("phase", "cycles", "us", "what"):
        table.add_column(column, justify="left" if column in ("phase", "what") else "right")
    table.add_row("prefill", _n(pre["cycles"]), us(pre["cycles"]),
                  f"{pre['prompt_tokens']} prompt tokens; first token {pre['first_token']}")
    if link["cycles"]:
        table.add_row("link", _n(link["cycles"]), us(link["cycles"]),
                      f"{_n(link['message_bytes'])} B: decode state + the prompt's KV "
                      f"(stage {_n(link['stage_cycles'])} + link {_n(link['link_cycles'])})")
        table.add_row("delivery", _n(dl["cycles"]), us(dl["cycles"]),
                      f"{_n(dl['words'])} words into the SRAMs")
        table.add_row("decode", _n(dec["cycles"]), us(dec["cycles"]),
                      f"{dec['steps']} tokens, {dec['cycles_per_token']:,.0f} per token")
    table.add_row("total", _n(data["total_cycles"]), us(data["total_cycles"]), "end to end",
                  style="bold")
    console.print(table)
    if data.get("rtl"):
        rtl = data["rtl"]
        console.print(f"RTL: the same system image on {rtl['backend']} (the system top, "
                      f"{_n(rtl['cycles'])} cycles) equals the emulator's run in every phase "
                      f"cycle, mesh SRAM and counter, link counter and the DRAM "
                      f"({rtl['seconds']:.1f} s)", style="green", highlight=False)
    t = data["ttft"]
    console.print(f"time to first token: {_n(t['cycles'])} cycles = {t['us']:,.3f} us at "
                  f"{mhz:g} MHz (prefill {_n(t['prefill'])} + link {_n(t['link'])} + delivery "
                  f"{_n(t['delivery'])} + first decode step {_n(t['first_decode_step'])}); the "
                  f"first answer token is known on the engine after "
                  f"{_n(t['first_token_on_engine'])}", highlight=False)
    rates = data["tokens_per_second"]
    decode_rate = f"{rates['decode']:,.0f}" if rates["decode"] else "-"
    console.print(f"tokens per second at {mhz:g} MHz (nominal clock): decode {decode_rate} "
                  f"(one sequence), end to end {rates['end_to_end']:,.0f} "
                  f"({len(data['tokens'])} tokens)", highlight=False)
    lines = [f"prefill engine: {pre['array']} array, utilization "
             f"{100 * pre['array_utilization']:.1f}%; DMA {_n(pre['dma_bytes'])} B, "
             f"{pre['dram_bytes_per_cycle']:.2f} B/cycle"]
    if link["cycles"]:
        lines.append(f"link: {link['lanes']} lanes x {link['lane_width']} bits, latency "
                     f"{link['latency']}; {link['words_per_tile']} words per tile (the "
                     f"header and the prompt's K and V slots: {_n(link['prompt_kv_bytes'])} B "
                     f"of K and V in all); "
                     f"{link['packets']} packets, retransmissions {link['retransmits']}, "
                     f"timeouts {link['timeouts']}, NACKs {link['nacks']}, dropped "
                     f"{link['channel_drops']}, lanes dead {link['lanes_dead'] or 'none'}; "
                     f"sender done (every ACK back) after {_n(link['sender_done_cycles'])}, "
                     f"goodput {100 * link['goodput']:.1f}% of the line rate")
        lines.append(f"delivery: at most one word a cycle per row into the west edge, every "
                     f"word in a core after {_n(dl['cycles'])}; the same mesh program then "
                     f"decodes")
        lines.append(f"mesh decode: cycles per step {', '.join(_n(c) for c in dec['step_cycles'])};"
                     f" MAC utilization {100 * dec['mac_utilization']:.1f}% (weight MACs over "
                     f"4 per core per cycle; {100 * dec['counted_mac_utilization']:.1f}% "
                     f"counted), cores waiting on the fabric "
                     f"{100 * dec['fabric_wait_share']:.1f}% of their cycles")
    wall = data.get("emulator_seconds") or {}
    if wall:
        console.print(f"emulated in {sum(wall.values()):.1f} s ("
                      + ", ".join(f"{k} {v:.1f}" for k, v in wall.items()) + ")",
                      highlight=False)
    console.print("counters:")
    for line in lines:
        console.print("  " + line, markup=False, highlight=False)


def render_comparison(console, data):
    """The disaggregated run against the prefill engine alone (``data["single_engine"]``)."""
    one = data["single_engine"]
    mhz = data["clock_mhz"]
    pre = data["phases"]["prefill"]
    table = Table(title=f"disaggregated against one engine (cycles; tokens/s at {mhz:g} MHz)",
                  title_justify="left")
    for column in ("system", "TTFT", "per token", "total", "decode tok/s", "e2e tok/s",
                   "tokens"):
        table.add_column(column, justify="left" if column == "system" else "right")
    bandwidth = one["phases"]["decode"]["dram_bandwidth"]
    for name, r in ((f"mesh {data['mesh']}", data), ("engine only", one)):
        rates = r["tokens_per_second"]
        table.add_row(name, _n(r["ttft"]["cycles"]),
                      f"{r['phases']['decode']['cycles_per_token']:,.0f}",
                      _n(r["total_cycles"]),
                      f"{rates['decode']:,.0f}" if rates["decode"] else "-",
                      f"{rates['end_to_end']:,.0f}",
                      "exact" if r["exact"] else "DIFFER")
    console.print(table)
    console.print(f"  one engine: the same prefill, then every decode step on the {pre['array']} "
                  f"array streams all weights from DRAM at {bandwidth} B/cycle "
                  f"(programs.decode_baseline); the host's work between steps takes no cycles",
                  markup=False, highlight=False)
