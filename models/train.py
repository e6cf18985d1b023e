"""``tierwise train``: rebuild every committed model artefact from the data folder, deterministically.

1. Fine-tune the multi-task encoder on the train splits (``models/finetune.py``): the fp16 encoder delta
   and the heads land in ``models/heads/``.
2. Export it to ONNX and int8 (``models/encoder_export.py``), as ``make setup`` does.
   Then refit, on the exported model's states, the reading head with class weights (labels and entity
   types are rare pieces; ``finetune.refit_span_head``) and the entity taggers as small MLPs over a word
   and its neighbours (``finetune.refit_taggers``).
3. Calibrate every head on held-out rows with the int8 model that serves (``models/tier1_eval.py``):
   temperatures and keep thresholds land in ``models/heads/calibration.json``.
4. Refresh the test fixtures that pin the model's numbers: held-out rows per head and the int8 outputs
   that every machine must reproduce (``tests/fixtures/``).

Test-split figures come from ``tierwise eval tier1``, never from here.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from models.finetune import TrainConfig, train_multitask
from models.heads import HEADS_DIR

log = logging.getLogger(__name__)

STEPS = ("finetune", "export", "refit_span", "refit_taggers", "calibrate", "fixtures")
REPO_ROOT = Path(__file__).resolve().parent.parent
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
        from models.encoder_export import export_encoder

        report["export"] = str(export_encoder(encoder_dir, force=True, delta_path=out_dir / "encoder.safetensors"))
    if "refit_span" in only:
        from models.finetune import refit_span_head

        report["refit_span"] = refit_span_head(encoder_dir, out_dir, seed=config.seed)
    if "refit_taggers" in only:
        from models.finetune import refit_taggers

        report["refit_taggers"] = refit_taggers(encoder_dir, out_dir, seed=config.seed)
    if "calibrate" in only:
        from models.tier1_eval import calibrate_all

        calibration = calibrate_all(encoder_dir, out_dir)
        calibration.save(out_dir / "calibration.json")
        report["calibrate"] = {name: h.threshold for name, h in calibration.heads.items()}
    if "fixtures" in only:
        from models.tier1 import load_heads
        from models.tier1_eval import write_head_fixtures, write_int8_reference

        report["fixtures"] = write_head_fixtures(FIXTURES / "heads_fixture.json", load_heads(out_dir))
        texts = (REPO_ROOT / "loadtests" / "int8_kernel_texts.txt").read_text().splitlines()
        write_int8_reference(FIXTURES / "int8_reference.npz", encoder_dir, out_dir,
                             [t for t in texts if t and not t.startswith("#")])
    (out_dir / "train_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
