"""Cycle-level model of the prefill engine's weight-stationary systolic array, written from the
timing contract of :class:`hdl.SystolicArray` (not from its RTL), and the plain matrix product it
computes.

The contract, in short: an activation row presented in cycle t with buffer b and data a has its
element i in PE(i, j) in cycle t + i + j, where it adds ``a[i] * W_b[i][j]`` to column j, with
``W_b[i][j]`` the weight register's value at the start of that cycle (a write in cycle c takes
effect at the end of cycle c); the result row is on the output in cycle t + 2n exactly. The model
keeps the rows in flight and, every cycle, applies to each the anti-diagonal of PEs it occupies.
"""

import numpy as np

__all__ = ["SystolicModel", "systolic_reference"]

MIN_SIZE, MAX_SIZE = 2, 32
_INT8_MIN, _INT8_MAX = -128, 127


def _int8_vector(name, values, length):
    array = np.asarray(values)
    if array.shape != (length,):
        raise ValueError(f"{name} must hold {length} values, not shape {array.shape}")
    if array.dtype.kind not in "iub":
        raise TypeError(f"{name} must hold integers, not {array.dtype}")
    if array.size and (array.min() < _INT8_MIN or array.max() > _INT8_MAX):
        raise ValueError(f"{name} values must be int8 (from -128 to 127)")
    return array.astype(np.int64)


def _buffer(name, value):
    if value not in (0, 1) or isinstance(value, float):
        raise ValueError(f"{name} must be 0 or 1, not {value!r}")
    return int(value)


class _Row:
    """An activation row in flight: presented in cycle ``t``, its partial sums so far."""

    __slots__ = ("t", "buffer", "data", "acc")

    def __init__(self, t, buffer, data, n):
        self.t, self.buffer, self.data = t, buffer, data
        self.acc = np.zeros(n, dtype=np.int64)


class SystolicModel:
    """The n x n systolic array, one :meth:`step` per clock cycle (cycle 0 is the first step
    after construction or :meth:`reset`; all weights start at zero).

    Parameters
    ----------
    n : :class:`int`
        The array size, from 2 to 32.

    Attributes
    ----------
    n : :class:`int`
    latency : :class:`int`
        2n: an activation row presented in cycle t gives its result row in cycle t + 2n.
    cycle : :class:`int`
        The cycle the next :meth:`step` models.
    weights : :class:`numpy.ndarray` (2, n, n), int8
        The weight registers at the start of cycle :attr:`cycle`: ``weights[b, i, j]`` is the
        weight of buffer b in PE(i, j). Read-only; write through :meth:`step`.
    """

    def __init__(self, n):
        if not isinstance(n, int) or isinstance(n, bool) or not MIN_SIZE <= n <= MAX_SIZE:
            raise ValueError(f"n must be an integer from {MIN_SIZE} to {MAX_SIZE}, not {n!r}")
        self._n = n
        # For a row d cycles after its presentation (0 <= d <= 2n - 2): the PEs (i, j) with
        # i + j = d, which its elements occupy in that cycle.
        self._diagonals = []
        for d in range(2 * n - 1):
            i = np.arange(max(0, d - n + 1), min(n - 1, d) + 1)
            self._diagonals.append((i, d - i))
        self.reset()

    @property
    def n(self):
        return self._n

    @property
    def latency(self):
        return 2 * self._n

    @property
    def weights(self):
        view = self._weights.astype(np.int8)
        view.flags.writeable = False
        return view

    def reset(self):
        """Back to cycle 0: no rows in flight, all weights zero."""
        self.cycle = 0
        self._weights = np.zeros((2, self._n, self._n), dtype=np.int64)
        self._in_flight = []

    def step(self, *, weights=None, act=None, transpose=False):
        """Model one cycle and return the output row of this cycle (an int32 array of n), or
        None when the output is not valid.

        Parameters
        ----------
        weights : None or (buffer, row, data)
            A weight row write in this cycle: row ``row`` (0 to n - 1) of buffer ``buffer``
            (0 or 1) becomes ``data`` (n int8) at the end of the cycle.
        transpose : bool
            The weight write fills column ``row`` instead: ``weights[buffer, i, row] = data[i]``.
        act : None or (buffer, data)
            An activation row presented in this cycle (None: a bubble): ``data`` (n int8),
            element i into array row i, multiplying weight buffer ``buffer``.
        """
        n = self._n
        if weights is not None:
            w_buffer, w_row, w_data = weights
            w_buffer = _buffer("weights buffer", w_buffer)
            if (not isinstance(w_row, (int, np.integer)) or isinstance(w_row, bool)
                    or not 0 <= w_row < n):
                raise ValueError(f"weights row must be an integer from 0 to {n - 1}, "
                                 f"not {w_row!r}")
            w_data = _int8_vector("weights data", w_data, n)
        if act is not None:
            a_buffer, a_data = act
            self._in_flight.append(_Row(self.cycle, _buffer("act buffer", a_buffer),
                                        _int8_vector("act data", a_data, n), n))

        # Every row in flight adds its products on its current anti-diagonal, with the weights
        # as they are at the start of this cycle.
        output = None
        for row in self._in_flight:
            d = self.cycle - row.t
            if d < len(self._diagonals):
                i, j = self._diagonals[d]
                row.acc[j] += row.data[i] * self._weights[row.buffer, i, j]
        if self._in_flight and self._in_flight[0].t == self.cycle - self.latency:
            output = self._in_flight.pop(0).acc.astype(np.int32)   # wraps like int32

        if weights is not None:
            if transpose:
                self._weights[w_buffer, :, w_row] = w_data
            else:
                self._weights[w_buffer, w_row] = w_data
        self.cycle += 1
        return output


def systolic_reference(weights, activations):
    """The result rows the array computes for activation rows ``activations`` (m, k) and weights
    ``weights`` (k, n), all int8, with weights that do not change meanwhile:
    ``activations @ weights`` as int32, wrapping around."""
    weights, activations = np.asarray(weights), np.asarray(activations)
    for name, array in (("weights", weights), ("activations", activations)):
        if array.ndim != 2:
            raise ValueError(f"{name} must be a 2-D array, not shape {array.shape}")
        if array.dtype.kind not in "iub":
            raise TypeError(f"{name} must hold integers, not {array.dtype}")
        if array.size and (array.min() < _INT8_MIN or array.max() > _INT8_MAX):
            raise ValueError(f"{name} values must be int8 (from -128 to 127)")
    if activations.shape[1] != weights.shape[0]:
        raise ValueError(f"activations have {activations.shape[1]} columns but weights have "
                         f"{weights.shape[0]} rows")
    return (activations.astype(np.int64) @ weights.astype(np.int64)).astype(np.int32)
