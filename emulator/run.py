"""Run a fabric with a traffic source and sink attached until all traffic is delivered."""

import numpy as np

from mesh import Port

__all__ = ["CycleLimitExceeded", "NoProgress", "run"]


class NoProgress(RuntimeError):
    """Wavelets are held and nothing has moved for ``stall_limit`` cycles in a row. The message
    gives the cycle and one line per blocked queue (:meth:`FabricEmulator.report`)."""

    def __init__(self, cycle, stall_limit, lines):
        self.cycle = cycle
        self.lines = lines
        super().__init__(f"no progress for {stall_limit} cycles at cycle {cycle}:\n  "
                         + "\n  ".join(lines))


class CycleLimitExceeded(RuntimeError):
    """The traffic was not delivered within ``max_cycles``."""


def run(fabric, source, sink, max_cycles, stall_limit=200):
    """Step ``fabric`` with ``source`` and ``sink`` attached until the source is done, the fabric
    is empty and the sink has taken out everything it received.

    Returns (cycles, events): the number of cycles stepped, and every wavelet sent by every
    router port as (cycle, tile, port, color, data), in cycle then (tile, port) order.
    Raises :class:`NoProgress` when wavelets are held (in the fabric or the sink) and for
    ``stall_limit`` consecutive cycles nothing was sent, injected or taken out by the sink, and
    :class:`CycleLimitExceeded` when ``max_cycles`` are not enough.
    """
    start = fabric.cycle
    sent = []   # per cycle: (cycle, flat side indices, colors, data) of every router output
    stalled = 0
    while not (source.done and fabric.held() == 0 and sink.held == 0):
        if fabric.cycle - start >= max_cycles:
            raise CycleLimitExceeded(
                f"traffic not delivered within {max_cycles} cycles (at cycle {fabric.cycle}: "
                f"{source.remaining} wavelet(s) not injected, {fabric.held()} in the fabric, "
                f"{sink.held} in the sink)")
        valid, color, data = source.drive()
        credit = sink.credits()
        result = fabric.step(valid, color, data, credit)
        source.update(result.in_credit)
        sink.update(result.out_valid, result.out_color, result.out_data, result.cycle)

        side = np.flatnonzero(result.sent_valid)
        if side.size:
            sent.append((result.cycle, side, result.sent_color.reshape(-1)[side],
                         result.sent_data.reshape(-1)[side]))
        if side.size or valid.any() or credit.any():
            stalled = 0
        elif fabric.held() or sink.held:
            stalled += 1
            if stalled >= stall_limit:
                lines = fabric.report()
                if sink.held:
                    lines.append(f"the sink holds {sink.held} wavelet(s) it does not take out")
                raise NoProgress(fabric.cycle, stall_limit, lines)
    return fabric.cycle - start, _events(sent)


def _events(sent):
    if not sent:
        return []
    cycles = np.concatenate([np.full(side.size, cycle) for cycle, side, _, _ in sent])
    tiles, ports = np.divmod(np.concatenate([side for _, side, _, _ in sent]), len(Port))
    colors = np.concatenate([c for _, _, c, _ in sent])
    data = np.concatenate([d for _, _, _, d in sent])
    return [(cycle, tile, Port(port), color, value)
            for cycle, tile, port, color, value in zip(
                cycles.tolist(), tiles.tolist(), ports.tolist(), colors.tolist(), data.tolist())]
