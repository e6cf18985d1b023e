"""The int8 quantisation setting (models/training/quantize.py) on a one-MatMul model built here, and the CPU
report; the emulated-CPU comparison (qemu) is a slow test, skipped where qemu is absent."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from models.training.quantize import (  # noqa: E402
    INT16_MAX,
    QUANT_SETTINGS,
    kernel_report,
    max_u8s8_pair_sum,
    quantize_encoder,
)

ROOT = Path(__file__).resolve().parents[3]
CHECK_SCRIPT = ROOT / "loadtests" / "check_int8_kernels.py"
K, N = 64, 16


def tiny_matmul(path: Path, weight: np.ndarray) -> Path:
    """``y = x @ weight`` with ``x`` float ``[1, T, K]``: the shape of one encoder MatMul."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="dense/MatMul")],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "T", weight.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "T", weight.shape[1]])],
        [numpy_helper.from_array(weight.astype(np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def saturating_weight() -> np.ndarray:
    """Random weights whose first two rows hold each column's largest value: with per-channel s8 they
    become +127 twice, so ``255*127 + 255*127`` overflows AVX2's int16 pair sum for a positive input."""
    rng = np.random.default_rng(0)
    w = rng.normal(0.0, 0.1, size=(K, N))
    w[0:2] = 1.0
    return w


def int8_weights(path: Path) -> list[np.ndarray]:
    model = onnx.load(str(path))
    arrays = [numpy_helper.to_array(i) for i in model.graph.initializer if i.data_type == TensorProto.INT8]
    return [a for a in arrays if a.ndim == 2]  # not the (zero) zero points


def run(path: Path, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.fixture
def quantised(tmp_path) -> tuple[Path, Path]:
    """(fp32, recommended int8) tiny models."""
    fp32 = tiny_matmul(tmp_path / "tiny.onnx", saturating_weight())
    out = tmp_path / "tiny.int8.onnx"
    quantize_encoder(fp32, out)
    return fp32, out


def test_weights_are_per_channel_s8_in_the_reduced_range(quantised):
    _, out = quantised
    assert out.exists() and not out.with_name(out.name + ".tmp").exists()
    weights = int8_weights(out)
    assert len(weights) == 1 and weights[0].shape == (K, N)
    assert weights[0].min() >= -64 and weights[0].max() <= 64
    assert weights[0].max() == 64  # the reduced range is used in full, not 7 bits of a smaller one
    model = onnx.load(str(out))
    assert [n.op_type for n in model.graph.node].count("MatMulInteger") == 1
    scales = [numpy_helper.to_array(i) for i in model.graph.initializer
              if i.data_type == TensorProto.FLOAT and i.name.endswith("_scale")]
    assert any(s.shape == (N,) for s in scales)  # one scale per output channel


def test_pair_sums_stay_below_the_avx2_saturation_point(quantised, tmp_path):
    fp32, out = quantised
    assert max_u8s8_pair_sum(out) == 255 * 128 <= INT16_MAX
    # Full-range per-channel s8 (the former setting) is what overflows on AVX2.
    from onnxruntime.quantization import QuantType, quantize_dynamic

    full = tmp_path / "full.int8.onnx"
    quantize_dynamic(str(fp32), str(full), weight_type=QuantType.QInt8, per_channel=True)
    assert max_u8s8_pair_sum(full) == 255 * 254 > INT16_MAX
    assert max_u8s8_pair_sum(fp32) == 0  # no MatMulInteger at all


def test_quantised_model_stays_close_to_fp32(quantised):
    fp32, out = quantised
    x = np.random.default_rng(1).normal(size=(1, 7, K)).astype(np.float32)
    ref, got = run(fp32, x), run(out, x)
    assert got.shape == ref.shape == (1, 7, N)
    assert np.abs(got - ref).max() <= 0.05 * np.abs(ref).max()


def test_settings_record_the_reduced_range():
    assert QUANT_SETTINGS["weight_type"] == "QInt8"
    assert QUANT_SETTINGS["per_channel"] is True and QUANT_SETTINGS["reduce_range"] is True


def test_kernel_report_keys():
    report = kernel_report()
    for key in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx"):
        assert isinstance(report[key], bool), key
    assert report["int8_gemm"] in ("exact", "vpmaddubsw", "other")
    assert report["source"] in ("cpuid", "/proc/cpuinfo", "none")
    if report["avx512_vnni"]:
        assert report["avx512f"] and report["int8_gemm"] == "exact"
    if report["machine"] in ("x86_64", "AMD64") and sys.platform == "linux":
        assert report["source"] != "none"


def test_kernel_report_agrees_with_proc_cpuinfo():
    """Natively (not under qemu), CPUID and the kernel's flags line say the same."""
    cpuinfo = Path("/proc/cpuinfo")
    report = kernel_report()
    if report["source"] != "cpuid" or not cpuinfo.exists():
        pytest.skip("CPUID not readable here")
    line = next(ln for ln in cpuinfo.read_text().splitlines() if ln.startswith("flags"))
    flags = set(line.split(":")[1].split())
    assert report["avx2"] == ("avx2" in flags)
    assert report["avx512_vnni"] == ("avx512_vnni" in flags)


def load_check_script():
    spec = importlib.util.spec_from_file_location("check_int8_kernels", CHECK_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_check_script_says_what_to_install_without_qemu(monkeypatch, capsys):
    module = load_check_script()
    monkeypatch.setattr(module, "qemu_binary", lambda: None)
    monkeypatch.setattr(sys, "argv", ["check_int8_kernels.py"])
    assert module.main() == 2
    assert "apt-get install qemu-user" in capsys.readouterr().err


def test_fixture_texts():
    texts = [ln for ln in (ROOT / "loadtests" / "int8_kernel_texts.txt").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert len(texts) >= 50


SNIPPET = """
import os
from pathlib import Path
import numpy as np
import onnxruntime as ort
opts = ort.SessionOptions()
opts.intra_op_num_threads = 1
s = ort.InferenceSession(os.environ["KERNEL_CHECK_MODEL"], opts, providers=["CPUExecutionProvider"])
x = np.linspace(0.0, 1.0, 5 * {K}, dtype=np.float32).reshape(1, 5, {K})
x[:, :, :2] = 1.0  # u8 255 against the two +127 (or +64) weights
np.save(Path(os.environ["KERNEL_CHECK_OUT"]) / "y.npy", s.run(None, {{"x": x}})[0])
"""


@pytest.mark.slow
@pytest.mark.skipif(not (os.environ.get("QEMU_X86_64") or shutil.which("qemu-x86_64")),
                    reason="qemu-x86_64 absent (apt-get install qemu-user)")
def test_emulated_avx2_matches_native(quantised, tmp_path):
    """The recommended model is bit-identical on the emulated AVX2 CPU; the full-range one is not,
    where this machine has VNNI/AMX (otherwise both sides run the same kernel)."""
    fp32, out = quantised
    snippet = tmp_path / "snippet.py"
    snippet.write_text(SNIPPET.format(K=K))

    def check(model: Path) -> subprocess.CompletedProcess:
        cmd = [sys.executable, str(CHECK_SCRIPT), "--snippet", str(snippet), "--model", str(model)]
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)

    proc = check(out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    if kernel_report()["int8_gemm"] == "exact":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        full = tmp_path / "full.int8.onnx"
        quantize_dynamic(str(fp32), str(full), weight_type=QuantType.QInt8, per_channel=True)
        proc = check(full)
        assert proc.returncode == 1, proc.stdout + proc.stderr
