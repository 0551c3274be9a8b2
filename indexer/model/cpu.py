"""The CPU a process runs on, as the classes whose arithmetic decides which precision is fastest,
and the one table that picks a new index's precision for each (figures in docs/benchmarks.md).

An index keeps the precision it was built with wherever it is served (vectors of two precisions
never mix), so the table only decides for new indexes; `native` says whether an index's
precision runs on this CPU's own instructions or is emulated (correct, but slower).
SEMSEARCH_CPU_CLASS forces a class: tests take every path whatever CPU runs them.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

from indexer.settings import current

VNNI, AVX512, AVX2, ARM_DOT, BASELINE = "avx512-vnni", "avx512", "avx2", "arm-dotprod", "baseline"
CLASSES = (VNNI, AVX512, AVX2, ARM_DOT, BASELINE)
DESCRIPTIONS = {
    VNNI: "AVX-512 with VNNI (or AMX): int8 dot products summed in 32 bits",
    AVX512: "AVX-512 without VNNI: int8 products through 16-bit sums (VPMADDUBSW)",
    AVX2: "AVX2 without AVX-512 or VNNI: int8 products through 16-bit sums (VPMADDUBSW)",
    ARM_DOT: "ARM with dot-product instructions (SDOT/UDOT)",
    BASELINE: "no AVX2 or ARM dot product: fp32 only",
}


class UnknownClass(ValueError):
    """SEMSEARCH_CPU_CLASS names no class."""


@dataclass(frozen=True)
class Choice:
    """A CPU class's precision for a new index, and why (the measured or reasoned figures)."""

    precision: str
    why: str


# The fastest precision whose vectors keep a mean cosine of at least 0.995 to fp32 and SciFact
# dense nDCG@10 within 0.005 of fp32 on that class (docs/benchmarks.md, "Precision by CPU").
TABLE = {
    VNNI: Choice("int8-static", "measured on AMD EPYC Zen 4 and an Intel Xeon with AMX: a SciFact build in 0.465x "
                                "and 0.473x a plain sentence-transformers encode, dense nDCG@10 0.6707 and 0.6626 "
                                "against fp32's 0.6627 (bf16, as exact as fp32, took 0.501x on the Xeon)"),
    AVX512: Choice("fp32", "not measured: without VNNI, int8 products sum into 16 bits as on AVX2, where no int8 "
                           "precision kept fp32's quality and ran faster; taken to behave as AVX2"),
    AVX2: Choice("fp32", "measured on AMD EPYC Zen 3 (fp32 on OpenVINO there, 1.2x ONNX Runtime): int8-7bit ran "
                         "1.35x faster but lost dense nDCG@10 (0.6514 against 0.6627), int8-static lost cosine "
                         "(0.994) and was slower, int8 was no faster"),
    ARM_DOT: Choice("fp32", "not measured (no ARM machine here): int8 would need its own measurement first"),
    BASELINE: Choice("fp32", "the only precision without AVX2 or an ARM dot product"),
}


# Where fp32 runs, by class (else ONNX Runtime): the same vectors (cosine 1.00000), measured faster.
# AMD EPYC Zen 3: 22.9 against 19.1 passages/s (bench/embedding.py); queries stay on ONNX Runtime
# (3.5 against 5.2 ms).
FP32_RUNTIME = {AVX2: "openvino"}


@dataclass(frozen=True)
class Cpu:
    """What the precision choice needs to know of this CPU."""

    name: str
    cpu_class: str
    flags: frozenset[str]
    forced: bool = False  # the class came from SEMSEARCH_CPU_CLASS

    @property
    def bf16(self) -> bool:
        return bool({"avx512_bf16", "amx_bf16"} & self.flags) or self.cpu_class == VNNI and self.forced

    def describe(self) -> str:
        forced = ", forced by SEMSEARCH_CPU_CLASS" if self.forced else ""
        return f"{self.name}: class {self.cpu_class} ({DESCRIPTIONS[self.cpu_class]}{forced})"


def classify(flags: frozenset[str], machine: str) -> str:
    """The class of a CPU with these /proc/cpuinfo flags (x86) or features (ARM)."""
    if machine in ("aarch64", "arm64"):
        return ARM_DOT if "asimddp" in flags else BASELINE
    if {"avx512_vnni", "amx_int8"} & flags:
        return VNNI
    if "avx512bw" in flags:
        return AVX512
    return AVX2 if "avx2" in flags else BASELINE


def read_cpu(cpuinfo: Path = Path("/proc/cpuinfo")) -> Cpu:
    """This machine's CPU (its class forced by SEMSEARCH_CPU_CLASS when set)."""
    flags: set[str] = set()
    name = platform.processor() or platform.machine()
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("flags", "features"):
                flags.update(value.split())
            elif key in ("model name", "cpu model") and value.strip():
                name = value.strip()
    except OSError:
        pass
    forced = (current().cpu_class or "").strip()
    if forced and forced not in CLASSES:
        raise UnknownClass(f"SEMSEARCH_CPU_CLASS must be one of {', '.join(CLASSES)}, not {forced!r}")
    return Cpu(name, forced or classify(frozenset(flags), platform.machine()), frozenset(flags), bool(forced))


def native(precision: str, cpu: Cpu) -> bool:
    """Whether precision runs on this CPU's own instructions (else it is emulated: same vectors
    within rounding, more time)."""
    if precision == "int8-7bit":  # 7-bit weights: AVX2's 16-bit sums cannot saturate
        return cpu.cpu_class != BASELINE
    if precision.startswith("int8"):
        return cpu.cpu_class in (VNNI, ARM_DOT)
    if precision == "bf16":
        return cpu.bf16
    return True


SAMPLE_QUERIES = ("why won't russia stop", "how many casualties were there", "flood warnings in the north",
                  "what did the central bank decide on interest rates", "who won the election")


def query_p50_ms(embed_query, rounds: int = 4) -> float:
    """Median milliseconds of one query embedding here (after one warm-up query): what a
    precision costs on this CPU, measured, for the log, /readyz and `semsearch doctor`."""
    import statistics
    import time

    embed_query(SAMPLE_QUERIES[0])
    times = []
    for _ in range(rounds):
        for query in SAMPLE_QUERIES:
            started = time.perf_counter()
            embed_query(query)
            times.append(1000 * (time.perf_counter() - started))
    return round(statistics.median(times), 2)
