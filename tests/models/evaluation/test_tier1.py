"""A smoke run of ``tierwise eval tier1`` on a few rows of each test set (it reads the data folder)."""

from __future__ import annotations

import json

from models.evaluation.tier1 import run_report
from tests.support.datasets import needs_datasets


@needs_datasets
def test_report_smoke_run(settings, tmp_path):
    figures = run_report(settings, tmp_path, max_requests=40, limit=40)
    written = json.loads((tmp_path / "figures.json").read_text())
    for key in ("sst2.accuracy", "sst2.kept_accuracy", "banking77.accuracy", "clinc150.in_scope_accuracy",
                "clinc150.oos_recall", "conll2003.f1", "wnut17.f1", "stackfaq.top1", "jhu_covid.top1",
                "faq.abstention", "answer_fit.accuracy", "answer_fit.wrongly_kept_rate", "latency_ms.p50"):
        assert key in written and key in figures
    assert 0 <= written["answer_fit.accuracy"] <= 1 and written["latency_ms.p50"] > 0
    report = (tmp_path / "report.md").read_text()
    assert "beside their reference models" in report and "Answer fit" in report
