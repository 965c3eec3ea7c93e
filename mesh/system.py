"""The system top's phases and error causes (docs/ARCHITECTURE.md section 13, "The system"),
shared by the RTL (``hdl.system``), the emulator (``emulator.system``) and the Verilator runner.
"""

from enum import IntEnum

__all__ = ["SystemPhase", "SystemCause", "TX_NODE", "RX_NODE", "MESSAGE_ID", "EVENTS",
           "LINK_COUNTERS", "word_bytes", "stage_cycles"]

#: The packet link's node ids in the system: the engine's side sends, the mesh's side receives.
TX_NODE, RX_NODE = 1, 2
#: The id of the system's one message.
MESSAGE_ID = 0
#: The handoff cycles a run records (section 13), in this order.
EVENTS = ("prefill_end", "stage_start", "link_start", "tx_done", "rx_done", "mesh_start",
          "delivery_done", "end")
#: The link counters a run reports: the sender's packets taken by a lane, of them resent, its
#: timeouts; the receiver's packets accepted.
LINK_COUNTERS = ("sent", "retransmits", "timeouts", "accepted")


def word_bytes(prefill_config):
    """W: the bytes of one word of the prefill engine's DRAM model (the power of two at least
    4n): the system loads, peeks and stages the DRAM a word at a time."""
    return 1 << (4 * prefill_config.n - 1).bit_length()


def stage_cycles(prefill_config, words):
    """Cycles of the STAGE phase for a message of ``words`` words: one per DRAM word's W / 4
    message words (rounded up), plus one for the last chunk's write."""
    return -(-words // (word_bytes(prefill_config) // 4)) + 1


class SystemPhase(IntEnum):
    """The sequencer's phase (3 bits), in the order the phases run."""
    PREFILL = 0     # the prefill engine runs its command list
    STAGE = 1       # the message is copied from the engine's DRAM into the sender's memory
    LINK = 2        # the packet link carries the message into the receive buffer
    MESH = 3        # the delivery engine feeds the mesh, whose cores run
    DONE = 4        # every core has halted, or one trapped (``trap``)
    ERROR = 5       # a phase failed (``error_cause``)


class SystemCause(IntEnum):
    """Why the system stopped in phase ERROR (3 bits)."""
    NONE = 0
    ENGINE = 1      # the prefill engine stopped with an error (its EngineError on engine_error)
    MESSAGE = 2     # the message is not whole words inside the DRAM and the sender's memory
    LINK = 3        # the sender stopped with an error (its TxError on tx_error)
    DELIVERY = 4    # the delivery engine refused the command (its DeliveryError)
    CHANNEL = 5     # a lane channel overflowed its buffer (a bug: the sizes cover any traffic)
