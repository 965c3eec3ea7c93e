"""``wafer bench decode``: the bandwidth result. One decode step (one token at position P, the
KV cache of P tokens) on the mesh, every weight resident in the cores' SRAMs
(:mod:`programs.mesh_decode`, on the emulator), against the same step on the prefill engine
alone, every weight streamed from DRAM (:func:`programs.decode_baseline.baseline_cycles`, the
compiler's timing model, exact against the emulator).

**Models.** *Strong scaling*: the tiny trained model (:mod:`programs.transformer`, d_model 64,
d_ff 128, 2 layers, 66,368 weight bytes) on every mesh size; a size the compiler refuses is
listed with its reason. *Weak scaling*: per mesh, a :func:`programs.mesh_decode.random_int_model`
(4 heads, 2 layers, vocab 13, context 16) with d_model (a multiple of 32) and d_ff (a multiple
of 32, 2 d_model <= d_ff <= 4 d_model: a transformer's usual MLP ratio) whose weights are at
least ``share`` (default 50%) of the mesh's total SRAM, the smallest such model that the
compiler places; if none at or above the share places (the compiler also needs room for the KV
cache, tables and buffers), the largest below it that places. The share reached is reported.
The weak models' meshes are compiled without the traced intermediates
(``keep_intermediates=False``), which leaves more room for weights. Every mesh run's token is
checked against the integer reference (:func:`programs.mesh_decode.decode_trace`).

**SRAM per core.** Every mesh of the sweep (strong, weak and time to first token) has
``sram_words`` 32-bit words of data SRAM per core (``--sram-words``; default 4096 words =
16 KiB, :class:`mesh.MeshConfig`'s default). 12288 words (48 KiB) is the real Cerebras WSE-3's
per-core SRAM (44 GB of on-chip SRAM over 900,000 cores: 48 KB per core) and the largest
:class:`mesh.MeshConfig` allows; more SRAM per core lets the tiny model place on smaller meshes
and the weak-scaling models grow.

**Measures.** Mesh: cycles of the step (the emulator's, exact), MAC utilization, and the share
of all core-cycles waiting on the fabric (``stall_in``/``stall_out``; the decoder's phase
counters), which is where communication starts to dominate as the mesh grows. Roofline of the
mesh: weight MACs / (4 x cores): a core's ``vdot4`` does 4 int8 MACs a cycle, reading one
4-byte word of weights and one of activations with its two SRAM read ports, so of the
aggregate SRAM bandwidth (cores x 2 reads x 4 bytes a cycle) half carries weights and the
roofline is weight bytes / (cores x 4 B/cycle) = weight bytes / (aggregate SRAM bandwidth / 2).
Roofline of the baseline: weight bytes / DRAM bandwidth (:func:`baseline_cycles` also reports
its own bound, weights plus the KV rows read). The engine's DMA issues one SBUF row of n bytes a
cycle, so a channel faster than n = 8 B/cycle moves no more: 16 B/cycle runs exactly as 8, and
the roofline and bandwidth ratio use the effective min(bandwidth, n). Speedup = baseline cycles / mesh cycles, shown
against the bandwidth ratio aggregate SRAM bandwidth / DRAM bandwidth (and the weight-stream
ratio, half of it). The KV cache is not in either roofline.

**The DRAM bandwidth.** The prefill engine's DRAM channel moves ``dram_bandwidth`` bytes per
cycle (an integer, 1 to 128; :class:`mesh.prefill.PrefillConfig`, default 8). Its 8x8 array does
64 MACs = 128 ops a cycle. A real accelerator's balance point is far higher than 128 / 8 = 16
ops per DRAM byte: an NVIDIA H100 SXM does ~989 TFLOP/s dense BF16 over 3.35 TB/s of HBM3,
~295 FLOP/byte (NVIDIA H100 Tensor Core GPU datasheet); an AWS Trainium (Trn1) chip ~190 TFLOP/s
BF16 over 820 GB/s, ~230 FLOP/byte. Matching H100 would take 128 / 295 = 0.43 B/cycle, below
the channel's integer minimum of 1 B/cycle. This benchmark's default is therefore **1 B/cycle**
(128 ops/byte: the closest the engine can get to a real accelerator's balance, still 2.3x more
DRAM bandwidth per op than H100, so it flatters the baseline), and the sweep includes the
engine's own default of 8 B/cycle (16 ops/byte: a DRAM 18x faster per op than H100's) and 16.
At 1 B/cycle the baseline is DRAM-bound (about 3% above its bound), so at a balance-matched
0.43 B/cycle it would take ~2.3x longer and every speedup here would grow by about that factor;
at 8 B/cycle and above the baseline is partly compute-bound and the speedup understates the
bandwidth ratio the other way. The time-to-first-token comparison runs the prefill engine at
the default bandwidth too (its prefill streams weights from DRAM as well).

**Time to first token** (the tiny model, one prompt): :func:`programs.system.run_disaggregated`
(prefill on the engine, the KV cache over the link, delivery into the mesh, decode on the mesh)
split into prefill, transfer (link + delivery) and the first decode step, against
:func:`programs.system.run_single_engine` (the same prefill, then the baseline's decode steps on
the engine), with the end-to-end cycles of both.
"""

import time
from dataclasses import dataclass, replace

import numpy as np

from mesh import MeshConfig

__all__ = ["DecodeSweep", "DecodeMismatch", "run_decode_sweep", "render_decode", "plot_decode",
           "weak_model_dims", "DEFAULT_JSON", "DEFAULT_PLOT", "QUICK", "DEFAULT_BANDWIDTH",
           "H100_OPS_PER_BYTE", "TRN1_OPS_PER_BYTE"]

DEFAULT_JSON = "results/bench_decode.json"
DEFAULT_PLOT = "results/bench_decode.png"
DEFAULT_BANDWIDTH = 1             # B/cycle: the channel's minimum, nearest a real balance point
H100_OPS_PER_BYTE = 989e12 / 3.35e12     # ~295 FLOP/byte: H100 SXM dense BF16 / HBM3
TRN1_OPS_PER_BYTE = 190e12 / 820e9       # ~232 FLOP/byte: Trainium (Trn1) BF16 / HBM
PROMPT = "123+459="
WEAK = dict(n_heads=4, n_layers=2, vocab=13, context=16)

# A short sweep (``--quick`` and the tests).
QUICK = dict(strong=("4x4",), weak=("4x4",), bandwidths=(1, 8), ttft=("4x4",))


class DecodeMismatch(RuntimeError):
    """A mesh decode step whose token differs from the integer reference's."""


@dataclass
class DecodeSweep:
    """``strong``: mesh shapes for the tiny model; ``weak``: mesh shapes for the weak-scaling
    models (weights at least ``share`` of the mesh's SRAM, the smallest such that places, else
    the largest below; :func:`weak_model_dims`); ``bandwidths``: the baseline's DRAM bandwidths
    (B/cycle; ``dram_bandwidth``, the default, is added); ``ttft``: mesh shapes of the
    time-to-first-token comparison (``prompt``); ``sram_words``: every mesh's data SRAM per
    core, in 32-bit words (4096, :class:`mesh.MeshConfig`'s default, is 16 KiB; 12288, the
    most it allows, is a WSE-3 core's 48 KiB); ``colors``: every mesh's colors (8, the
    default; with 9 or more the decode's single-word row all-reduces run as two chains, see
    :mod:`programs.mesh_decode.plan`)."""
    strong: tuple = ("2x2", "4x4", "8x8", "16x16")
    weak: tuple = ("4x4", "8x8", "16x16")
    bandwidths: tuple = (1, 2, 4, 8, 16)
    dram_bandwidth: int = DEFAULT_BANDWIDTH
    share: float = 0.5
    ttft: tuple = ("4x4", "8x8")
    prompt: str = PROMPT
    sram_words: int = MeshConfig.sram_words
    colors: int = MeshConfig.colors

    def mesh(self, shape):
        """The :class:`mesh.MeshConfig` of ``shape`` ("WxH") with ``sram_words`` per core and
        ``colors``."""
        return replace(MeshConfig.parse_shape(shape), sram_words=self.sram_words,
                       colors=self.colors)

    def all_bandwidths(self):
        return tuple(sorted(set(self.bandwidths) | {self.dram_bandwidth}))

    def check(self):
        from mesh.prefill import PrefillConfig
        MeshConfig(sram_words=self.sram_words, colors=self.colors)   # range checks
        for shape in (*self.strong, *self.weak, *self.ttft):
            self.mesh(shape)
        for bw in self.all_bandwidths():
            PrefillConfig(dram_bandwidth=bw)
        if not 0 < self.share <= 1:
            raise ValueError(f"the SRAM share must be in (0, 1], not {self.share}")
        from programs.transformer import task
        task.parse_prompt(self.prompt)

    def points(self):
        return len(self.strong) + len(self.weak) + len(self.ttft)


def _prefill_config(bandwidth):
    from programs.prefill_compiler import DEFAULT_CONFIG
    return replace(DEFAULT_CONFIG, dram_bandwidth=bandwidth)


def weak_model_dims(config, share, n_heads=4, n_layers=2, vocab=13, context=16):
    """(d_model, d_ff) of the weak-scaling model for ``config``, or None if none places.

    The candidates: d_model a multiple of 32 (and of ``n_heads``), d_ff a multiple of 32 with
    2 d_model <= d_ff <= 4 d_model (a transformer's usual MLP ratio). The model is the one with
    the smallest weight bytes that are at least ``share`` of ``config``'s total SRAM and that
    the mesh compiler places (:func:`programs.mesh_decode.plan` without the traced
    intermediates); if none at or above the share places, the one with the largest weight
    bytes below it that places. Candidates are tried in that order (ties: the smaller d_model
    first) and the first that places is taken."""
    from programs.mesh_decode import ModelDims, PlacementError, plan

    total = config.tiles * config.sram_words * 4
    above, below = [], []
    for d in range(32, 1 << 16, 32):
        if d % n_heads:
            continue
        fixed = ModelDims(d, n_heads, d // n_heads, 2 * d, n_layers, vocab, context, n_layers)
        if fixed.weight_bytes > total:      # the smallest d_ff: no weights beyond the SRAM
            break
        for f in range(2 * d, 4 * d + 1, 32):
            dims = replace(fixed, d_ff=f)
            if dims.weight_bytes > total:
                break
            (above if dims.weight_bytes >= share * total else below).append(
                (dims.weight_bytes, d, dims))
    above.sort(key=lambda c: c[:2])
    below.sort(key=lambda c: (-c[0], c[1]))
    for _, _, dims in above + below:
        try:
            plan(dims, config, False)
        except (PlacementError, ValueError):
            continue
        return dims.d_model, dims.d_ff
    return None


def _dims_dict(dims):
    return {"d_model": dims.d_model, "n_heads": dims.n_heads, "d_ff": dims.d_ff,
            "n_layers": dims.n_layers, "vocab": dims.vocab, "context": dims.context}


def _mesh_point(model, config, cache, token, keep_intermediates):
    """One decode step on the mesh (emulator, phase counters); checked against the reference."""
    from programs.mesh_decode import MeshDecoder, decode_trace

    start = time.perf_counter()
    decoder = MeshDecoder(model, config, keep_intermediates=keep_intermediates)
    compiled = time.perf_counter()
    run = decoder.run(cache, token, steps=1, phases=True)
    m = decoder.measure(run)
    logits, _, _ = decode_trace(model, token, cache)
    expected = int(np.argmax(logits))
    if run.tokens != [expected]:
        raise DecodeMismatch(f"{config.shape}: the mesh decoded {run.tokens}, the integer "
                             f"reference {expected}")
    cores = config.tiles
    roofline = m["useful_macs"] / (4 * cores)
    return {"cycles": m["cycles"], "cycles_per_token": m["cycles_per_step"],
            "mac_utilization": m["mac_utilization"], "weight_macs": m["useful_macs"],
            "counted_macs": m["counted_macs"], "fabric_wait_share": m["wait_share"],
            "phase_share": m["phase_share"], "phase_wait_share": m["phase_wait_share"],
            "roofline": roofline, "roofline_share": roofline / m["cycles"],
            "layers_looped": decoder.loop, "keep_intermediates": keep_intermediates,
            "token": run.tokens[0], "compile_seconds": compiled - start,
            "emulate_seconds": time.perf_counter() - compiled}


def _baseline(model, position, bandwidths, mesh_cycles, sram_bw):
    from programs.decode_baseline import baseline_cycles

    out = {}
    for bw in bandwidths:
        b = baseline_cycles(model, position, _prefill_config(bw))
        # The DMA issues one SBUF row (n bytes) a cycle: more than n B/cycle is not used.
        effective = min(bw, b["n"])
        roofline = b["weight_bytes"] / effective
        out[str(bw)] = {
            "dram_bandwidth": bw, "effective_bandwidth": effective, "cycles": b["cycles"],
            "bound": b["bound"],
            "bound_ratio": b["ratio"], "compute_cycles": b["compute_cycles"],
            "weight_bytes": b["weight_bytes"], "kv_bytes": b["kv_bytes"],
            "roofline": roofline, "roofline_share": roofline / b["cycles"],
            "speedup": b["cycles"] / mesh_cycles,
            "bandwidth_ratio": sram_bw / effective,
            "weight_bandwidth_ratio": sram_bw / 2 / effective}
    return out


def _point(sweep, scaling, shape, model_of):
    config = sweep.mesh(shape)
    cores = config.tiles
    sram_bytes = cores * config.sram_words * 4
    sram_bw = cores * 2 * 4
    entry = {"scaling": scaling, "mesh": shape, "cores": cores,
             "sram_words": config.sram_words, "sram_bytes": sram_bytes,
             "sram_bandwidth": sram_bw, "weight_bandwidth": cores * 4}
    from programs.mesh_decode import PlacementError, ModelDims, prefill

    made = model_of(config)
    if isinstance(made, str):
        entry.update(fits=False, refused=made)
        return entry
    model, keep, tokens = made
    dims = ModelDims.of(model)
    entry["model"] = _dims_dict(dims)
    entry["weight_bytes"] = dims.weight_bytes
    entry["weight_share"] = dims.weight_bytes / sram_bytes
    _, cache, token = prefill(model, tokens)
    entry["position"] = cache.length
    try:
        mesh = _mesh_point(model, config, cache, token, keep)
    except PlacementError as error:
        entry.update(fits=False, refused=str(error))
        return entry
    entry["fits"] = True
    entry["mesh_decode"] = mesh
    try:
        entry["baseline"] = _baseline(model, cache.length, sweep.all_bandwidths(),
                                      mesh["cycles"], sram_bw)
    except ValueError as error:       # the engine cannot hold the step (e.g. its commands)
        entry["baseline"] = {}
        entry["baseline_refused"] = str(error)
    if "1" in entry["baseline"]:
        # Not simulated: the baseline at 1 B/cycle is DRAM-bound (94 to 99% of its roofline),
        # so at the H100-matched bandwidth it would take about 1 / that bandwidth as long.
        balance = 128 / H100_OPS_PER_BYTE
        cycles = entry["baseline"]["1"]["cycles"] / balance
        entry["balance_estimate"] = {"dram_bandwidth": balance, "baseline_cycles": cycles,
                                     "speedup": cycles / mesh["cycles"], "simulated": False}
    return entry


def _ttft(sweep, shape, tiny):
    from programs.system import run_disaggregated, run_single_engine

    pc = _prefill_config(sweep.dram_bandwidth)
    start = time.perf_counter()
    dis = run_disaggregated(sweep.prompt, sweep.mesh(shape), prefill_config=pc, model=tiny)
    single = run_single_engine(sweep.prompt, prefill_config=pc, model=tiny)
    if not (dis.exact and single.exact):
        raise DecodeMismatch(f"{shape}: the disaggregated or single-engine tokens differ from "
                             f"generate_int")
    t = dis.ttft
    return {
        "mesh": shape, "sram_words": sweep.sram_words, "prompt": sweep.prompt,
        "dram_bandwidth": sweep.dram_bandwidth,
        "tokens": len(dis.tokens),
        "disaggregated": {"prefill": t["prefill"], "link": t["link"], "delivery": t["delivery"],
                          "transfer": t["link"] + t["delivery"],
                          "first_decode_step": t["first_decode_step"], "ttft": t["cycles"],
                          "decode_cycles_per_token": dis.decode["cycles_per_token"],
                          "total": dis.total_cycles},
        "single_engine": {"prefill": single.ttft["prefill"], "transfer": 0,
                          "first_decode_step": single.ttft["first_decode_step"],
                          "ttft": single.ttft["cycles"],
                          "decode_cycles_per_token": single.decode["cycles_per_token"],
                          "total": single.total_cycles},
        "ttft_speedup": single.ttft["cycles"] / t["cycles"],
        "total_speedup": single.total_cycles / dis.total_cycles,
        "seconds": time.perf_counter() - start}


def run_decode_sweep(sweep, progress=None):
    """Run the sweep; returns the JSON-ready report. Raises :class:`DecodeMismatch` for a wrong
    token."""
    from programs.mesh_decode import random_int_model
    from programs.transformer import task
    from programs.transformer.model import IntModel

    task_id = progress.add_task("decode", total=sweep.points()) if progress else None
    start = time.perf_counter()
    tiny = IntModel.load()
    prompt_tokens = task.tokenize(sweep.prompt)

    def step(text):
        if progress:
            progress.update(task_id, description=text)

    def done():
        if progress:
            progress.advance(task_id)

    def tiny_model(config):
        return tiny, True, prompt_tokens

    def weak_model(config):
        found = weak_model_dims(config, sweep.share, **WEAK)
        if found is None:
            return (f"no model of d_model, d_ff multiples of 32 (2 d_model <= d_ff <= 4 "
                    f"d_model) places on the {config.shape} mesh with {config.sram_words:,} "
                    f"words per core")
        d, f = found
        model = random_int_model(d, WEAK["n_heads"], f, WEAK["n_layers"], WEAK["vocab"],
                                 seed=1, context=WEAK["context"])
        tokens = np.random.default_rng(2).integers(0, WEAK["vocab"], len(prompt_tokens))
        return model, False, tokens.tolist()

    points = []
    for scaling, shapes, model_of in (("strong", sweep.strong, tiny_model),
                                      ("weak", sweep.weak, weak_model)):
        for shape in shapes:
            step(f"{scaling} {shape}")
            points.append(_point(sweep, scaling, shape, model_of))
            done()
    ttft = []
    for shape in sweep.ttft:
        step(f"time to first token {shape}")
        ttft.append(_ttft(sweep, shape, tiny))
        done()
    return {
        "benchmark": "decode", "simulator": "emulator.MeshEmulator (mesh), the decode "
        "baseline's timing model (exact against emulator.prefill.PrefillEmulator)",
        "prompt": sweep.prompt, "position": len(prompt_tokens),
        "dram_bandwidth": sweep.dram_bandwidth, "bandwidths": list(sweep.all_bandwidths()),
        "share": sweep.share, "weak_model": dict(WEAK), "sram_words": sweep.sram_words,
        "sram_bytes_per_core": 4 * sweep.sram_words, "colors": sweep.colors,
        "dram_bandwidth_source": (
            f"default {sweep.dram_bandwidth} B/cycle: the 8x8 engine does 128 ops/cycle; a "
            f"real accelerator's balance point is ~{H100_OPS_PER_BYTE:.0f} FLOP/DRAM byte "
            f"(NVIDIA H100 SXM datasheet: 989 TFLOP/s dense BF16 / 3.35 TB/s HBM3) or "
            f"~{TRN1_OPS_PER_BYTE:.0f} (AWS Trainium Trn1: 190 TFLOP/s BF16 / 820 GB/s), i.e. "
            f"{128 / H100_OPS_PER_BYTE:.2f} B/cycle; 1 B/cycle is the channel's integer minimum "
            f"(128 ops/byte, still 2.3x more bandwidth per op than H100); the engine's own "
            f"default 8 B/cycle (16 ops/byte) is in the sweep"),
        "balance_matched_bandwidth": 128 / H100_OPS_PER_BYTE,
        "roofline_formulas": {
            "mesh": "weight MACs / (4 x cores) = weight bytes / (cores x 4 B/cycle): one of "
                    "the two 4-byte SRAM reads per vdot4 cycle carries weights",
            "baseline": "weight bytes / min(DRAM bandwidth, n): the DMA issues one n-byte "
                        "row a cycle",
            "speedup": "baseline cycles / mesh cycles",
            "bandwidth_ratio": "cores x 2 x 4 B/cycle / min(DRAM bandwidth, n)"},
        "points": points, "ttft": ttft, "seconds": time.perf_counter() - start}


# Output ------------------------------------------------------------------------------------------

def plot_decode(report, path):
    """Speedup (baseline / mesh cycles) against the core count, strong and weak scaling, at the
    default DRAM bandwidth and at 8 B/cycle, with the bandwidth ratios (log scales)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7.5, 5.0), dpi=120)
    colors = plt.get_cmap("tab10")
    bws = [report["dram_bandwidth"]] + [b for b in (8,) if b in report["bandwidths"]
                                        and b != report["dram_bandwidth"]]
    for k, bw in enumerate(bws):
        for scaling, marker, style in (("strong", "o", "-"), ("weak", "s", "--")):
            pts = [p for p in report["points"] if p["scaling"] == scaling and p["fits"]
                   and str(bw) in p["baseline"]]
            if not pts:
                continue
            axes.plot([p["cores"] for p in pts],
                      [p["baseline"][str(bw)]["speedup"] for p in pts], marker=marker,
                      linestyle=style, color=colors(k),
                      label=f"speedup, {scaling} scaling, DRAM {bw} B/cycle")
        cores = sorted({p["cores"] for p in report["points"] if p["fits"]})
        if cores:
            axes.plot(cores, [8 * c / bw for c in cores], color=colors(k), linestyle=":",
                      label=f"SRAM / DRAM bandwidth ratio at {bw} B/cycle")
            axes.plot(cores, [4 * c / bw for c in cores], color=colors(k), linestyle="-.",
                      alpha=0.5, label=f"weight-stream ratio (half) at {bw} B/cycle")
    axes.set_xscale("log", base=2)
    shapes = {p["cores"]: p["mesh"] for p in report["points"] if p["fits"]}
    axes.set_xticks(sorted(shapes))
    axes.set_xticklabels([f"{shapes[c]}\n{c} cores" for c in sorted(shapes)])
    axes.minorticks_off()
    axes.set_yscale("log")
    axes.set_xlabel("cores in the mesh (log scale)")
    axes.set_ylabel("speedup of mesh decode over the DRAM baseline (log scale)")
    axes.set_title("Decode step: weights in SRAM (mesh, "
                   f"{_sram_text(report['sram_words'])}, {report['colors']} colors)\n"
                   "vs streamed from DRAM (engine)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _sram_text(words):
    """'16 KiB per core' (4096 words)."""
    return f"{4 * words / 1024:g} KiB per core"


def _model_text(p):
    m = p["model"]
    return f"d{m['d_model']} f{m['d_ff']} L{m['n_layers']}"


def render_decode(report, console):
    from rich.table import Table

    points = report["points"]
    fits = [p for p in points if p["fits"]]
    P = report["position"]
    sram = _sram_text(report["sram_words"])
    mesh = Table(title=f"Mesh decode, one step at position {P}: weights resident in SRAM, "
                       f"{sram} ({report['sram_words']:,} words), {report['colors']} colors "
                       f"(emulator cycles, exact); roofline = weight MACs / (4 x cores)")
    for c in ("scaling", "mesh", "model", "weights", "% SRAM", "cycles/token", "roofline",
              "% roofline", "MAC util", "fabric wait", "SRAM B/cyc"):
        mesh.add_column(c, justify="left" if c in ("scaling", "mesh", "model") else "right",
                        no_wrap=True)
    for p in fits:
        m = p["mesh_decode"]
        mesh.add_row(p["scaling"], p["mesh"], _model_text(p), f"{p['weight_bytes']:,}",
                     f"{100 * p['weight_share']:.1f}", f"{m['cycles']:,}",
                     f"{m['roofline']:,.0f}", f"{100 * m['roofline_share']:.1f}",
                     f"{100 * m['mac_utilization']:.1f}%",
                     f"{100 * m['fabric_wait_share']:.1f}%", f"{p['sram_bandwidth']:,}")
    console.print(mesh)

    base = Table(title="Baseline: the same step on the prefill engine, weights streamed from "
                       "DRAM; roofline = weight bytes / DRAM bandwidth; speedup = baseline / "
                       f"mesh cycles (mesh SRAM {sram})")
    for c in ("scaling", "mesh", "model", "DRAM B/cyc", "baseline cycles", "roofline",
              "% roofline", "compute-only", "mesh cycles", "speedup", "BW ratio",
              "speedup / ratio"):
        base.add_column(c, justify="left" if c in ("scaling", "mesh", "model") else "right",
                        no_wrap=True)
    for p in fits:
        for key, b in p["baseline"].items():
            default = b["dram_bandwidth"] == report["dram_bandwidth"]
            eff = b["effective_bandwidth"]
            bw_text = f"{b['dram_bandwidth']}{' *' if default else ''}" + (
                f" ({eff} eff.)" if eff != b["dram_bandwidth"] else "")
            base.add_row(p["scaling"], p["mesh"], _model_text(p), bw_text, f"{b['cycles']:,}",
                         f"{b['roofline']:,.0f}", f"{100 * b['roofline_share']:.1f}",
                         f"{b['compute_cycles']:,}", f"{p['mesh_decode']['cycles']:,}",
                         f"{b['speedup']:.2f}x", f"{b['bandwidth_ratio']:,.0f}",
                         f"{b['speedup'] / b['bandwidth_ratio']:.3f}")
    console.print(base)

    if report["ttft"]:
        t = Table(title=f"Time to first token, tiny model, prompt {report['ttft'][0]['prompt']!r}"
                        f", engine DRAM {report['dram_bandwidth']} B/cycle, mesh SRAM "
                        f"{sram} (cycles)")
        for c in ("mesh", "system", "prefill", "transfer", "first decode step", "TTFT",
                  "decode cycles/token", "end to end", "tokens"):
            t.add_column(c, justify="left" if c in ("mesh", "system") else "right",
                         no_wrap=True)
        for r in report["ttft"]:
            for name, s in (("disaggregated", r["disaggregated"]),
                            ("one engine", r["single_engine"])):
                t.add_row(r["mesh"] if name == "disaggregated" else "", name,
                          f"{s['prefill']:,}", f"{s['transfer']:,}",
                          f"{s['first_decode_step']:,}", f"{s['ttft']:,}",
                          f"{s['decode_cycles_per_token']:,.0f}", f"{s['total']:,}",
                          str(r["tokens"]))
            t.add_row("", "one engine / disaggregated", "", "", "",
                      f"{r['ttft_speedup']:.2f}x", "", f"{r['total_speedup']:.2f}x", "")
        console.print(t)
    for scaling in ("strong", "weak"):
        mine = [p for p in fits if p["scaling"] == scaling]
        if not mine:
            continue
        waits = ", ".join(f"{p['mesh']} {100 * p['mesh_decode']['fabric_wait_share']:.0f}%"
                          for p in mine)
        over = next((p["mesh"] for p in mine
                     if p["mesh_decode"]["fabric_wait_share"] > 0.5), None)
        best = min(mine, key=lambda p: p["mesh_decode"]["cycles"])
        text = (f"{scaling.capitalize()} scaling: core-cycles waiting on the fabric {waits}"
                + (f"; more than half from {over} on" if over else "; under half everywhere")
                + f". Fewest cycles per token: {best['mesh']} "
                  f"({best['mesh_decode']['cycles']:,}).")
        estimates = [p for p in mine if "balance_estimate" in p]
        if estimates:
            bw = estimates[0]["balance_estimate"]["dram_bandwidth"]
            text += (f" Estimated speedup at the H100-matched {bw:.2f} B/cycle (not simulated: "
                     f"the 1 B/cycle baseline scaled by {1 / bw:.2f}): " + ", ".join(
                         f"{p['mesh']} {p['balance_estimate']['speedup']:.0f}x"
                         for p in estimates) + ".")
        console.print(text, highlight=False)
    for p in points:
        if not p["fits"]:
            console.print(f"{p['scaling']} scaling, {p['mesh']}: skipped, the compiler refuses: "
                          f"{p['refused']}", highlight=False)
        elif "baseline_refused" in p:
            console.print(f"{p['scaling']} scaling, {p['mesh']}: no baseline, the prefill "
                          f"engine cannot run the step: {p['baseline_refused']}",
                          highlight=False)
    console.print(f"DRAM bandwidth (* in the table): {report['dram_bandwidth_source']}. At the "
                  f"default the baseline is DRAM-bound; at the H100-matched "
                  f"{report['balance_matched_bandwidth']:.2f} B/cycle it would take about "
                  f"{report['dram_bandwidth'] / report['balance_matched_bandwidth']:.1f}x "
                  f"longer (not simulated: the channel moves whole bytes per cycle). "
                  f"Weak-scaling models: random_int_model, {report['weak_model']}, "
                  f"2 d_model <= d_ff <= 4 d_model, the smallest whose weights are at least "
                  f"{100 * report['share']:.0f}% of the SRAM that places (else the largest "
                  f"below). "
                  f"Benchmark time {report['seconds']:.1f} s.", highlight=False)
    if report.get("plot"):
        console.print(f"Plot: {report['plot']}", highlight=False)
