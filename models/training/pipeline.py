"""``tierwise train``: rebuild every committed model artefact from the data folder, deterministically.

1. Fine-tune the multi-task encoder on the train splits (``models/training/finetune.py``): the fp16 encoder delta
   and the heads land in ``models/heads/``.
2. Export it to ONNX and int8 (``models/training/export.py``), as ``make setup`` does.
   Then refit, on the exported model's states, the reading head with class weights (labels and entity
   types are rare pieces; ``finetune.refit_span_head``) and the entity taggers as small MLPs over a word
   and its neighbours (``finetune.refit_taggers``).
3. Calibrate every head on held-out rows with the int8 model that serves (``models/evaluation/tier1.py``):
   temperatures and keep thresholds land in ``models/heads/calibration.json``.
4. Fit the quality heads (``models/quality.py``) on the served int8 embedding of the routing benchmarks'
   prompts: ``models/heads/quality.npz`` and its model card ``models/heads/QUALITY_CARD.md``.
5. Refresh the test fixtures that pin the model's numbers: held-out rows per head and the int8 outputs
   that every machine must reproduce (``tests/fixtures/``).

Test-split figures come from ``tierwise eval tier1``, never from here.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from models.training.finetune import TrainConfig, train_multitask
from models.heads import HEADS_DIR

log = logging.getLogger(__name__)

STEPS = ("finetune", "export", "refit_span", "refit_taggers", "calibrate", "quality", "fixtures")
REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT / "tests" / "fixtures"


def train_all(encoder_dir: Path, out_dir: Path = HEADS_DIR, only: tuple[str, ...] = STEPS,
              config: TrainConfig = TrainConfig()) -> dict:
    """Run the steps named in ``only`` (in order) and return what each reported."""
    unknown = set(only) - set(STEPS)
    if unknown:
        raise ValueError(f"unknown steps {sorted(unknown)}; choose from {STEPS}")
    report: dict = {}
    if "finetune" in only:
        started = time.perf_counter()
        report["finetune"] = train_multitask(out_dir, config)
        log.info("fine-tuned in %.0f s", time.perf_counter() - started)
    if "export" in only:
        from models.training.export import export_encoder

        report["export"] = str(export_encoder(encoder_dir, force=True, delta_path=out_dir / "encoder.safetensors"))
    if "refit_span" in only:
        from models.training.finetune import refit_span_head

        report["refit_span"] = refit_span_head(encoder_dir, out_dir, seed=config.seed)
    if "refit_taggers" in only:
        from models.training.finetune import refit_taggers

        report["refit_taggers"] = refit_taggers(encoder_dir, out_dir, seed=config.seed)
    if "calibrate" in only:
        from models.training.head_calibration import calibrate_all

        calibration = calibrate_all(encoder_dir, out_dir)
        calibration.save(out_dir / "calibration.json")
        report["calibrate"] = {name: h.threshold for name, h in calibration.heads.items()}
    if "quality" in only:
        report["quality"] = fit_quality(encoder_dir, out_dir)
    if "fixtures" in only:
        from models.tier1 import load_heads
        from models.training.fixtures import write_head_fixtures, write_int8_reference

        report["fixtures"] = write_head_fixtures(FIXTURES / "heads_fixture.json", load_heads(out_dir))
        texts = (REPO_ROOT / "loadtests" / "int8_kernel_texts.txt").read_text().splitlines()
        write_int8_reference(FIXTURES / "int8_reference.npz", encoder_dir, out_dir,
                             [t for t in texts if t and not t.startswith("#")])
    previous = out_dir / "train_report.json"
    if set(only) != set(STEPS) and previous.is_file():
        report = json.loads(previous.read_text()) | report
    (out_dir / "train_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def fit_quality(encoder_dir: Path, out_dir: Path) -> dict:
    """Train the quality heads and the tier-2 stacker on the int8 encoder that serves, and write them with
    their model card."""
    import numpy as np

    from models.calibration import Calibration
    from models.encoder import Encoder
    from models.training.requests.render import build_requests
    from models.labels import TASKS
    from models.quality import QUALITY_FILE
    from models.training.quality import (fit_tier2_suffices, load_quality_rows, quality_splits,
                                suffices_figures, train_quality_heads, write_model_card)
    from models.request import reader_text
    from models.tier1 import load_heads

    encoder = Encoder(encoder_dir, 128, threads=1, device="cpu")
    task_head, calibration = load_heads(out_dir)["task"], Calibration.load(out_dir / "calibration.json")

    def encode(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Pooled embedding and the task head's reasoning share, one text per pass as the router runs."""
        pooled, cls = [], []
        for t in texts:
            e = encoder.encode([t])
            pooled.append(e.pooled[0])
            cls.append(e.cls[0])
        probs = calibration.probs("task", task_head.logits(np.stack(cls)))
        generation, reasoning = probs[:, TASKS.index("generation")], probs[:, TASKS.index("reasoning")]
        return np.stack(pooled).astype(np.float32), reasoning / (generation + reasoning)

    rows = load_quality_rows()
    started = time.perf_counter()
    pooled, p_reasoning = encode([r.text for r in rows])
    log.info("embedded %d prompts in %.0f s", len(rows), time.perf_counter() - started)
    splits = quality_splits(rows)
    heads, report = train_quality_heads(rows, pooled, splits=splits)

    # The stacker learns from benchmark prompts with the stand-in's measured label and from the routing
    # set's generative requests; it is fitted on calibration rows and scored on test rows of each.
    from serve.settings import QualitySettings

    stand_in = heads.index(QualitySettings().tier2_as)

    def benchmark(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        idx = np.array([i for i in idx if heads.models[stand_in] in rows[i].labels])
        q = heads.predict(pooled[idx], [rows[i].text for i in idx])[:, stand_in]
        return q, p_reasoning[idx], np.array([rows[i].labels[heads.models[stand_in]] for i in idx])

    def routing(split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        examples = [e for e in build_requests(split) if e.task in ("generation", "reasoning")]
        user_pooled, _ = encode([e.user for e in examples])
        _, share = encode([reader_text(e.system, e.user) for e in examples])
        q = heads.predict(user_pooled, [e.user for e in examples])[:, stand_in]
        return q, share, np.array([float(e.task == "generation") for e in examples])

    parts = {"benchmark": (benchmark(splits[1]), benchmark(splits[2])), "routing": (routing("calib"), routing("test"))}
    fit_q, fit_r, fit_y, fit_src = (np.concatenate(x) for x in zip(*[
        (q, r, y, np.full(len(y), name)) for name, ((q, r, y), _) in parts.items()]))
    heads.suffices = fit_tier2_suffices(fit_q, fit_r, fit_y, fit_src)
    report["tier2_suffices"] = {
        "stand_in": heads.models[stand_in], "weights": [round(float(w), 4) for w in heads.suffices],
        "calib_rows": {name: int(len(fit[2])) for name, (fit, _) in parts.items()},
        "test": {name: suffices_figures(heads.tier2_suffices(q, r), y) for name, (_, (q, r, y)) in parts.items()}}
    heads.save(out_dir / QUALITY_FILE)
    (out_dir / "quality_report.json").write_text(json.dumps(report, indent=1) + "\n")
    write_model_card(out_dir / "QUALITY_CARD.md", report)
    return {"heads": len(heads.models), "rows": report["rows"], "tier2_suffices": report["tier2_suffices"]["test"]}
