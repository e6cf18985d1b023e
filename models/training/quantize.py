"""Dynamic int8 quantisation of the fused MiniLM encoder, and the CPU facts that decide its numbers.

ONNX Runtime runs the int8 MatMuls (u8 activations x s8 weights) with MLAS, which picks its kernel from
the CPU: with VNNI or AMX (``vpdpbusd``/``tdpbusd``) the int32 sums are exact; on AVX2-only (or
AVX-512 without VNNI) machines it uses ``vpmaddubsw``, which adds each pair of u8 x s8 products into a
*saturating* int16. With full-range s8 weights (|w| <= 127) a pair can reach 2 * 255 * 127 = 64770 and
is clipped at 32767, so the same text gives different scores on different machines.

``loadtests/check_int8_kernels.py`` compares both kernel families on one machine (qemu user mode).
"""

from __future__ import annotations

import ctypes
import mmap
import platform
from pathlib import Path

import numpy as np

# The largest |a0*w0 + a1*w1| that vpmaddubsw keeps exact (int16), a in 0..255.
INT16_MAX = 32767
U8_MAX = 255

# The recommended setting, for figures and tests to record next to their numbers.
QUANT_SETTINGS = {
    "weight_type": "QInt8",
    "per_channel": True,
    "reduce_range": True,
    "MatMulConstBOnly": True,
    "nodes_to_exclude": [],
}


def quantize_encoder(fused_path: Path, out_path: Path) -> None:
    """Quantise the fused fp32 encoder at ``fused_path`` to dynamic int8 at ``out_path``.

    Weights are s8 per output channel with ``reduce_range`` (-64..64), so a pair of u8 x s8 products stays
    within 2 * 255 * 64 = 32640 and AVX2's saturating ``vpmaddubsw`` kernel computes the same int32 sums
    as VNNI/AMX: under qemu (AVX2) the hidden states of 50 of 51 test texts matched the VNNI ones bit for
    bit and the last within 6e-7 (fp32 rounding, as the fp32 model itself), against up to 0.59 apart
    with full-range s8. The lost weight bit costs little (embedding cosine to fp32 0.991 mean, 0.969 min,
    vs 0.992 and 0.973) and no speed (~1.9 ms per query on one thread); u8 weights are exact too and
    closer to fp32, but 1.8x slower.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out_path = Path(out_path)
    tmp = out_path.with_name(out_path.name + ".tmp")
    quantize_dynamic(
        str(fused_path),
        str(tmp),
        weight_type=QuantType.QInt8,
        per_channel=True,
        reduce_range=True,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": True},
    )
    tmp.replace(out_path)


def max_u8s8_pair_sum(model_path: Path) -> int:
    """Largest ``|a0*w0 + a1*w1|`` (a in 0..255, w two K-adjacent s8 weights) over the int8 weights of
    the model's ``MatMulInteger`` nodes: above 32767 AVX2's ``vpmaddubsw`` saturates, so the model's
    numbers depend on the CPU; at or below it they do not. 0 when the model has no s8 weights.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_path))
    inits = {init.name: init for init in model.graph.initializer}
    worst = 0
    for node in model.graph.node:
        if node.op_type != "MatMulInteger" or len(node.input) < 2 or node.input[1] not in inits:
            continue
        w = numpy_helper.to_array(inits[node.input[1]])
        if w.dtype != np.int8:
            continue  # u8 x u8 runs on a widening kernel that does not saturate
        w = np.abs(w.astype(np.int32)).reshape(w.shape[0], -1)
        if w.shape[0] % 2:
            w = np.vstack([w, np.zeros((1, w.shape[1]), dtype=np.int32)])
        worst = max(worst, int((w[0::2] + w[1::2]).max()) * U8_MAX)
    return worst


# x86-64 System V: cpuid(leaf=edi, subleaf=esi, out=rdx) writes eax, ebx, ecx, edx to out[0..3].
_CPUID_CODE = bytes.fromhex(
    "53"  # push rbx
    "4989d0"  # mov r8, rdx
    "89f8"  # mov eax, edi
    "89f1"  # mov ecx, esi
    "0fa2"  # cpuid
    "418900"  # mov [r8], eax
    "41895804"  # mov [r8+4], ebx
    "41894808"  # mov [r8+8], ecx
    "4189500c"  # mov [r8+12], edx
    "5b"  # pop rbx
    "c3"  # ret
)
# xgetbv(0): XCR0, the register states the OS saves (AVX, AVX-512, AMX tiles).
_XGETBV_CODE = bytes.fromhex("31c90f01d048c1e2204809d0c3")


def _cpuid_flags() -> tuple[dict[str, bool], int]:
    """CPU flags read with the CPUID instruction itself, which (unlike /proc/cpuinfo) qemu user mode
    answers with the emulated CPU's; raises OSError where no executable page can be mapped."""
    buf = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    try:
        buf.write(_CPUID_CODE + b"\x90" * (64 - len(_CPUID_CODE)) + _XGETBV_CODE)
        base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        signature = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32))
        cpuid = signature(base)
        regs = (ctypes.c_uint32 * 4)()

        def leaf(eax: int, ecx: int = 0) -> tuple[int, int, int, int]:
            cpuid(eax, ecx, regs)
            return tuple(regs)

        max_leaf = leaf(0)[0]
        _, _, ecx1, _ = leaf(1)
        xcr0 = ctypes.CFUNCTYPE(ctypes.c_uint64)(base + 64)() if ecx1 >> 27 & 1 else 0
        _, ebx7, ecx7, edx7 = leaf(7) if max_leaf >= 7 else (0, 0, 0, 0)
        eax71 = leaf(7, 1)[0] if max_leaf >= 7 else 0
    finally:
        try:
            buf.close()
        except BufferError:  # a ctypes view still alive: the page goes with the process
            pass
    ymm = xcr0 & 0x6 == 0x6
    zmm = ymm and xcr0 & 0xE0 == 0xE0
    tiles = xcr0 & 0x60000 == 0x60000
    flags = {
        "avx2": ymm and bool(ebx7 >> 5 & 1),
        "avx512f": zmm and bool(ebx7 >> 16 & 1),
        "avx512_vnni": zmm and bool(ecx7 >> 11 & 1),
        "avx_vnni": ymm and bool(eax71 >> 4 & 1),
        "amx": tiles and bool(edx7 >> 25 & 1) and bool(edx7 >> 24 & 1),
    }
    return flags, xcr0


def _proc_cpuinfo_flags() -> dict[str, bool]:
    """Flags from /proc/cpuinfo (the host's, even under qemu user mode)."""
    text = Path("/proc/cpuinfo").read_text()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    have = set(line.partition(":")[2].split())
    return {
        "avx2": "avx2" in have,
        "avx512f": "avx512f" in have,
        "avx512_vnni": "avx512_vnni" in have,
        "avx_vnni": "avx_vnni" in have,
        "amx": "amx_int8" in have and "amx_tile" in have,
    }


def kernel_report() -> dict:
    """The CPU flags that pick ONNX Runtime's int8 GEMM kernel on this machine (or emulated CPU).

    Keys: ``avx2``, ``avx512f``, ``avx512_vnni``, ``avx_vnni``, ``amx`` (bools: the CPU has it and the
    OS enables its registers); ``int8_gemm``: ``"exact"`` (VNNI or AMX: int32 sums) or
    ``"vpmaddubsw"`` (AVX2/AVX-512 without VNNI: int16 pair sums that saturate) or ``"other"``;
    ``source``: ``"cpuid"``, ``"/proc/cpuinfo"`` or ``"none"``; ``machine``; ``xcr0`` (hex, cpuid only).
    """
    report: dict = {"machine": platform.machine()}
    flags = {k: False for k in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx")}
    source = "none"
    if platform.machine().lower() in ("x86_64", "amd64"):
        try:
            flags, xcr0 = _cpuid_flags()
            source = "cpuid"
            report["xcr0"] = hex(xcr0)
        except (OSError, ValueError, AttributeError):
            try:
                flags = _proc_cpuinfo_flags()
                source = "/proc/cpuinfo"
            except OSError:
                pass
    report.update(flags)
    report["source"] = source
    if flags["avx512_vnni"] or flags["avx_vnni"] or flags["amx"]:
        report["int8_gemm"] = "exact"
    elif flags["avx2"]:
        report["int8_gemm"] = "vpmaddubsw"
    else:
        report["int8_gemm"] = "other"
    return report
