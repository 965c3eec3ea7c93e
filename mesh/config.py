"""The validated machine configuration."""

from dataclasses import dataclass

__all__ = ["ConfigError", "MeshConfig"]

MAX_COLORS = 24
MIN_SRAM_WORDS = 256
MAX_SRAM_WORDS = 12288
MIN_IMEM_WORDS = 16
MAX_IMEM_WORDS = 1 << 14   # branch targets are 14 bits


class ConfigError(ValueError):
    """An invalid machine configuration. The message names the parameter and the problem."""


def _check_int(name, value, low, high=None):
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{name} must be an integer, not {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise ConfigError(f"{name} must be {bound}, not {value}")


@dataclass(frozen=True)
class MeshConfig:
    """A W x H mesh of tiles (router + core).

    ``buffer_depth`` is the depth of every per-color input queue, and so the number of credits a
    sender holds per color per link (the core's input queues have the same depth).
    ``sram_words`` is the size of each core's data SRAM and ``imem_words`` of its instruction
    memory, in 32-bit words. The credit loop is two cycles (see docs/ARCHITECTURE.md), so a
    depth of at least 2 is needed for a color to sustain one wavelet per cycle.
    """
    width: int = 4
    height: int = 4
    colors: int = 8
    buffer_depth: int = 2
    sram_words: int = 4096
    imem_words: int = 1024

    def __post_init__(self):
        _check_int("width", self.width, 1)
        _check_int("height", self.height, 1)
        _check_int("colors", self.colors, 1, MAX_COLORS)
        _check_int("buffer_depth", self.buffer_depth, 1, 64)
        _check_int("sram_words", self.sram_words, MIN_SRAM_WORDS, MAX_SRAM_WORDS)
        _check_int("imem_words", self.imem_words, MIN_IMEM_WORDS, MAX_IMEM_WORDS)

    @property
    def tiles(self):
        return self.width * self.height

    @property
    def shape(self):
        return f"{self.width}x{self.height}"

    def tile_index(self, x, y):
        """Tiles are numbered row-major: index = y * width + x."""
        self.check_tile(x, y)
        return y * self.width + x

    def tile_xy(self, index):
        return index % self.width, index // self.width

    def on_mesh(self, x, y):
        return 0 <= x < self.width and 0 <= y < self.height

    def check_tile(self, x, y):
        if not self.on_mesh(x, y):
            raise ConfigError(f"tile ({x},{y}) is outside the {self.shape} mesh")

    def check_color(self, color, where=""):
        if not isinstance(color, int) or isinstance(color, bool) or not 0 <= color < self.colors:
            raise ConfigError(f"{where}color {color!r} is out of range: "
                              f"this mesh has colors 0..{self.colors - 1}")

    @classmethod
    def parse_shape(cls, text, **kwargs):
        """Build a config from "WxH" (as given on the command line)."""
        try:
            w, h = (int(part) for part in text.lower().split("x"))
        except ValueError:
            raise ConfigError(f"mesh shape {text!r} is not of the form WxH, e.g. 4x4") from None
        return cls(width=w, height=h, **kwargs)
