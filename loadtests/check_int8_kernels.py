"""Run a Python snippet natively and on an emulated CPU without VNNI/AVX-512, and compare its outputs.

ONNX Runtime's int8 MatMul kernels differ by CPU: VNNI/AMX sum u8 x s8 products exactly, AVX2's
``vpmaddubsw`` saturates pairs of them at 32767 (see models/training/quantize.py). This script lets a developer
on a VNNI machine see what an AVX2-only machine computes, e.g. after re-exporting or retraining:

    .venv/bin/python loadtests/check_int8_kernels.py                  # the int8 encoder on the fixture texts
    .venv/bin/python loadtests/check_int8_kernels.py --model some.int8.onnx
    .venv/bin/python loadtests/check_int8_kernels.py --snippet my_check.py [--cpu Skylake-Client-v4]

A snippet is any Python file run from the repository root; it writes its results as ``.npy`` files
into the folder named by the environment variable ``KERNEL_CHECK_OUT`` (the default snippet writes
``hidden_NN.npy``, the last hidden state, and ``pooled_NN.npy``, the mean-pooled L2-normalised
embedding, per text of ``loadtests/int8_kernel_texts.txt``; ``KERNEL_CHECK_MODEL`` names its model).
The emulated side runs under ``qemu-x86_64`` (user mode, QEMU >= 7.2 for AVX2), about 50-100x slower:
keep snippets small (the default takes ~40 s emulated; fp32 MatMuls are far slower than int8 ones).

The fp32 kernels themselves differ by an ulp or so between AVX-512 and AVX2 (the fp32 encoder: up to
1.6e-6 on 3 of the fixture texts), so arrays within ``--atol`` (default 1e-4) count as agreeing; int8
saturation shows up as differences of 0.2-0.6 in every text's hidden states.

Exit status: 0 when every array is bit-identical or within ``--atol``, 1 when some differ, 2 when
the check cannot run (qemu missing, the emulated CPU still reports VNNI, the snippet failed).
Installs nothing: on Debian/Ubuntu ``apt-get install qemu-user`` provides ``qemu-x86_64``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TEXTS = ROOT / "loadtests" / "int8_kernel_texts.txt"
DEFAULT_MODEL = ROOT / "models" / "artifacts" / "encoder" / "encoder.int8.onnx"
# Haswell: AVX2 + FMA, no AVX-512, no VNNI; QEMU 7.2's TCG emulates AVX2 but neither AVX-512 nor VNNI.
DEFAULT_CPU = "Haswell-v4"
QEMU_INSTALL_HINT = (
    "qemu-x86_64 not found. Install QEMU user-mode emulation (nothing is installed by this script):\n"
    "  Debian/Ubuntu: sudo apt-get install qemu-user   (QEMU >= 7.2 is needed for AVX2 under TCG)\n"
    "  Fedora/RHEL:   sudo dnf install qemu-user\n"
    "or point QEMU_X86_64 at the binary."
)

DEFAULT_SNIPPET = r'''
import os
from pathlib import Path
import numpy as np
import onnxruntime as ort
from models.encoder import load_tokenizer

out = Path(os.environ["KERNEL_CHECK_OUT"])
model = Path(os.environ["KERNEL_CHECK_MODEL"])
texts = [ln.strip() for ln in Path(os.environ["KERNEL_CHECK_TEXTS"]).read_text().splitlines()
         if ln.strip() and not ln.startswith("#")]
tokenizer = load_tokenizer(Path(os.environ["KERNEL_CHECK_TOKENIZER_DIR"]), 128)
opts = ort.SessionOptions()  # as models/encoder.py runs it
opts.intra_op_num_threads = 1
opts.inter_op_num_threads = 1
opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
for i, text in enumerate(texts):
    ids = np.array([tokenizer.encode(text).ids], dtype=np.int64)
    (hidden,) = session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids),
                                   "token_type_ids": np.zeros_like(ids)})
    pooled = hidden[0].mean(axis=0)
    pooled /= np.linalg.norm(pooled) + 1e-12
    np.save(out / f"hidden_{i:02d}.npy", hidden[0])
    np.save(out / f"pooled_{i:02d}.npy", pooled)
'''

REPORT_SNIPPET = "import json; from models.training.quantize import kernel_report; print(json.dumps(kernel_report()))"


def qemu_binary() -> str | None:
    """Path of qemu-x86_64 (``$QEMU_X86_64`` first), or None."""
    return os.environ.get("QEMU_X86_64") or shutil.which("qemu-x86_64")


def run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run ``cmd`` from the repository root; drop QEMU's 'TCG doesn't support' warnings from stderr."""
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    proc.stderr = "\n".join(ln for ln in proc.stderr.splitlines() if "TCG doesn't support" not in ln)
    return proc


def compare(native: Path, emulated: Path, atol: float) -> tuple[bool, list[dict]]:
    """Per ``.npy`` name: bit-identical?, max |difference|, and the least cosine between rows."""
    rows, ok = [], True
    names = sorted({p.name for p in native.glob("*.npy")} | {p.name for p in emulated.glob("*.npy")})
    for name in names:
        if not (native / name).exists() or not (emulated / name).exists():
            rows.append({"name": name, "error": "missing on one side"})
            ok = False
            continue
        a, b = np.load(native / name), np.load(emulated / name)
        if a.shape != b.shape:
            rows.append({"name": name, "error": f"shapes {a.shape} vs {b.shape}"})
            ok = False
            continue
        row = {"name": name, "identical": bool(np.array_equal(a, b))}
        if np.issubdtype(a.dtype, np.number) and a.size:
            a64, b64 = a.astype(np.float64), b.astype(np.float64)
            row["max_abs_diff"] = float(np.abs(a64 - b64).max())
            width = a.shape[-1] if a.ndim else 1
            ra, rb = a64.reshape(-1, width), b64.reshape(-1, width)
            den = np.linalg.norm(ra, axis=1) * np.linalg.norm(rb, axis=1)
            cosine = np.where(den > 0, (ra * rb).sum(axis=1) / np.maximum(den, 1e-30), 1.0)
            row["min_row_cosine"] = float(cosine.min())
            ok &= row["identical"] or row["max_abs_diff"] <= atol
        else:
            ok &= row["identical"]
        rows.append(row)
    return ok and bool(names), rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--snippet", type=Path, help="Python file writing .npy files into $KERNEL_CHECK_OUT")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="model for the default snippet")
    parser.add_argument("--texts", type=Path, default=TEXTS, help="texts for the default snippet")
    parser.add_argument("--cpu", default=DEFAULT_CPU,
                        help="qemu -cpu model without VNNI (default %(default)s)")
    parser.add_argument("--atol", type=float, default=1e-4,
                        help="tolerated max |diff|, fp32 rounding (default %(default)s; 0: bit-identical)")
    parser.add_argument("--keep", type=Path, help="keep the native/ and emulated/ outputs in this folder")
    parser.add_argument("--json", type=Path, help="write the comparison as JSON here")
    args = parser.parse_args()

    qemu = qemu_binary()
    if not qemu:
        print(QEMU_INSTALL_HINT, file=sys.stderr)
        return 2
    if not args.snippet and not args.model.exists():
        print(f"{args.model} is missing: run `make setup` first", file=sys.stderr)
        return 2

    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=pythonpath,
               KERNEL_CHECK_MODEL=str(args.model.resolve()), KERNEL_CHECK_TEXTS=str(args.texts.resolve()),
               KERNEL_CHECK_TOKENIZER_DIR=str(DEFAULT_MODEL.parent), OMP_NUM_THREADS="1")
    emulate = [qemu, "-cpu", args.cpu]
    python = sys.executable

    reports = {}
    for side, prefix in (("native", []), ("emulated", emulate)):
        proc = run(prefix + [python, "-c", REPORT_SNIPPET], env)
        if proc.returncode:
            print(f"{side}: kernel_report failed:\n{proc.stderr}", file=sys.stderr)
            return 2
        reports[side] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{side:9s} CPU flags: {reports[side]}")
    if reports["emulated"]["int8_gemm"] != "vpmaddubsw":
        print(f"the emulated CPU {args.cpu!r} does not take the AVX2 vpmaddubsw path; pick another --cpu",
              file=sys.stderr)
        return 2
    if reports["native"]["int8_gemm"] != "exact":
        print("note: this machine has no VNNI/AMX, so both sides take the AVX2 path and must agree anyway")

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="int8_kernels_"))
    try:
        snippet = args.snippet.resolve() if args.snippet else work / "default_snippet.py"
        if not args.snippet:
            work.mkdir(parents=True, exist_ok=True)
            snippet.write_text(DEFAULT_SNIPPET)
        for side, prefix in (("native", []), ("emulated", emulate)):
            out = work / side
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            start = time.perf_counter()
            proc = run(prefix + [python, str(snippet)], dict(env, KERNEL_CHECK_OUT=str(out)))
            if proc.returncode:
                print(f"{side}: snippet failed (rc {proc.returncode}):\n{proc.stderr}", file=sys.stderr)
                return 2
            n_arrays = len(list(out.glob("*.npy")))
            print(f"{side:9s} run: {time.perf_counter() - start:.1f} s, {n_arrays} arrays")
        ok, rows = compare(work / "native", work / "emulated", args.atol)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    differing = [r for r in rows if not r.get("identical")]
    worst = max((r.get("max_abs_diff", 0.0) for r in rows), default=0.0)
    least_cos = min((r.get("min_row_cosine", 1.0) for r in rows), default=1.0)
    print(f"{len(rows) - len(differing)}/{len(rows)} arrays bit-identical; max |diff| {worst:.6g}; "
          f"least row cosine {least_cos:.6f}")
    beyond = [r for r in differing if r.get("max_abs_diff", float("inf")) > args.atol]
    print(f"{len(beyond)} arrays differ by more than --atol {args.atol:g}")
    for r in sorted(differing, key=lambda r: -r.get("max_abs_diff", float("inf")))[:10]:
        print("  differs:", r)
    if args.json:
        summary = {"cpu": args.cpu, "reports": reports, "ok": ok, "arrays": rows}
        args.json.write_text(json.dumps(summary, indent=1))
    print("OK: native and emulated agree" if ok else "DIFFERENT: int8 results depend on the CPU's kernels")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
