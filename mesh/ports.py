"""Router ports and mesh geometry (x grows east, y grows south)."""

from enum import IntEnum

__all__ = ["Port", "NUM_PORTS"]


class Port(IntEnum):
    """The five router ports. The integer value is the port's index everywhere (RTL arrays,
    emulator arrays, route masks: bit ``p`` of a port mask is port ``p``)."""
    N = 0
    E = 1
    S = 2
    W = 3
    RAMP = 4

    @property
    def opposite(self):
        """The port on the neighbouring router that this port's link connects to."""
        if self is Port.RAMP:
            raise ValueError("the RAMP port has no opposite: it connects to the tile's own core")
        return Port((self + 2) % 4)

    @property
    def delta(self):
        """(dx, dy) to the neighbouring tile this port faces."""
        return _DELTAS[self]

    @classmethod
    def parse(cls, value):
        """Accept a Port, its index, or its name ("N", "e", "ramp")."""
        if isinstance(value, Port):
            return value
        if isinstance(value, str):
            try:
                return cls[value.upper()]
            except KeyError:
                raise ValueError(f"unknown port {value!r}; expected one of N, E, S, W, RAMP") \
                    from None
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < NUM_PORTS:
            return cls(value)
        raise ValueError(f"unknown port {value!r}; expected one of N, E, S, W, RAMP or 0..4")


NUM_PORTS = len(Port)

_DELTAS = {Port.N: (0, -1), Port.E: (1, 0), Port.S: (0, 1), Port.W: (-1, 0), Port.RAMP: (0, 0)}
