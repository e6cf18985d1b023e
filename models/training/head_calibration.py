"""Calibrating the tier-1 heads on held-out rows (``tierwise train``, step ``calibrate``): a temperature and
a keep threshold per head, and Platt scaling of the FAQ and entity scores, written to
``models/heads/calibration.json``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.calibration import Calibration, HeadCalibration, ScoreCalibration
from models.encoder import Encoder
from models.entities import EntityTagger
from models.heads import LinearHead, softmax
from models.labels import CONLL_TYPES, SENTIMENT2, SENTIMENT3, TASKS
from models.request import reader_text
from models.tier1 import load_heads
from models.training import datasets as ds
from models.training.fitting import calibrate_head, fit_platt, summarise


class HeadRunner:
    """Runs the encoder once per distinct text (cached) and the heads on its states."""

    def __init__(self, encoder: Encoder, heads: dict[str, LinearHead]):
        self.encoder, self.heads = encoder, heads
        self._cache: dict[str, tuple] = {}

    def states(self, text: str):
        """``(cls, piece states, offsets, word_ids)`` of one text."""
        if text not in self._cache:
            enc = self.encoder.encode([text])
            self._cache[text] = (enc.cls[0], enc.tokens[0], enc.offsets[0], enc.word_ids[0])
        return self._cache[text]

    def sentence_logits(self, head: str, texts: list[str]) -> np.ndarray:
        """``[rows, classes]`` logits of a [CLS] head."""
        return self.heads[head].logits(np.stack([self.states(t)[0] for t in texts]))

    def clear(self) -> None:
        """Forget cached passes (they hold every piece state)."""
        self._cache.clear()


@dataclass
class SentenceSet:
    """Rows of one sentence head: texts and gold class indices."""

    head: str
    texts: list[str]
    gold: np.ndarray


def sentence_set(head: str, rows: list[tuple[str, str]], labels: tuple[str, ...]) -> SentenceSet:
    """A :class:`SentenceSet` from ``(text, label)`` rows, texts as users type them."""
    return SentenceSet(head, [ds.user_text(t) for t, _ in rows], np.array([labels.index(l) for _, l in rows]))


def calibration_sets(heads: dict[str, LinearHead]) -> list[SentenceSet]:
    """Held-out rows of the sentence heads (never seen in fine-tuning, never test rows)."""
    sst2 = [(t, l) for t, l in ds.sst2("train") if ds.is_calibration_row(t)]
    # SST-5 dev holds the SST-2 dev sentences (the reported sentiment set), so SST-5's held-out rows come
    # from its train split's calibration slice instead.
    three = [(t, l) for t, l in ds.sst5_three_way("train") if ds.is_calibration_row(t)] + ds.tweeteval("sentiment", "val")
    banking = [(t, l) for t, l in ds.banking77("train") if ds.is_calibration_row(t)]
    return [sentence_set("sentiment2", sst2, SENTIMENT2), sentence_set("sentiment3", three, SENTIMENT3),
            sentence_set("banking77", banking, heads["banking77"].labels),
            SentenceSet("clinc150", [ds.capitalise(t) for t, _ in ds.clinc150("val")],
                        np.array([heads["clinc150"].labels.index(l) for _, l in ds.clinc150("val")]))]


def entity_confidence_rows(runner: HeadRunner, sentences: list[ds.TaggedSentence]) -> tuple[np.ndarray, np.ndarray]:
    """Per sentence, asked for every type and for one type (rotating through CoNLL's four, as requests
    name them): the tagger's confidence and whether its answer is exactly the gold one."""
    conf, correct = [], []
    for k, s in enumerate(sentences):
        text, offsets = ds.detokenize_with_offsets(s.tokens)
        gold = {(text[a:b], t) for (a, b), t in _gold_entities(s.tags, offsets)}
        _, tokens, piece_offsets, word_ids = runner.states(text)
        tagger = EntityTagger(runner.heads["ner_conll"])
        for types in (None, [CONLL_TYPES[k % len(CONLL_TYPES)]]):
            entities, confidence = tagger.tag(text, tokens, piece_offsets, word_ids, types=types)
            want = gold if types is None else {g for g in gold if g[1] in types}
            conf.append(confidence)
            correct.append({(e.text, e.type) for e in entities} == want)
    return np.array(conf), np.array(correct)


def entity_request_rows(runner: HeadRunner, heads: dict[str, LinearHead], examples) -> tuple[np.ndarray, np.ndarray]:
    """Entity requests read and answered as tier 1 does (payload, types asked, both taggers and the
    patterns): the answer's confidence and whether its entities are exactly the gold ones."""
    from models.calibration import Calibration
    from models.reader import RequestReader
    from models.request import ParsedRequest
    from models.tier1 import RequestPass, Tier1Models

    reader = RequestReader(heads["task"], heads["span"])
    tier1 = Tier1Models(runner.encoder, heads, None, None, Calibration({}), 1.0)
    conf, correct = [], []
    for ex in (e for e in examples if e.task == "entities"):
        text = _reader(ex)
        cls, tokens, offsets, word_ids = runner.states(text)
        reading = reader.read(text, "entities", {}, tokens, offsets)
        parsed: ParsedRequest = reading.parsed
        if not parsed.payload or reading.unknown_types:
            continue
        f = RequestPass(text, cls, tokens, offsets, word_ids, np.zeros(0), reading.payload_pieces)
        entities, confidence = tier1.extract(f, parsed.payload, parsed.entity_types)
        conf.append(confidence)
        correct.append({(e.text, e.type) for e in entities} == set(map(tuple, ex.gold_entities)))
    runner.clear()
    return np.array(conf), np.array(correct)


def _gold_entities(tags: list[str], offsets: list[tuple[int, int]]) -> list[tuple[tuple[int, int], str]]:
    out: list[list] = []
    for tag, (a, b) in zip(tags, offsets):
        if tag == "O":
            continue
        prefix, kind = tag.split("-", 1)
        if prefix == "I" and out and out[-1][1] == kind:
            out[-1][0] = (out[-1][0][0], b)
        else:
            out.append([(a, b), kind])
    return [(span, kind) for span, kind in out]


def calibrate_all(encoder_dir: Path, heads_dir: Path) -> Calibration:
    """Fit every head's temperature and keep threshold on held-out rows with the int8 encoder.

    The request-level heads (task, labels, entities on requests) are fitted through the router and tier 1
    themselves on the synthetic ``calib`` requests, so the thresholds account for reading errors too.
    """
    heads = load_heads(heads_dir)
    encoder = Encoder(encoder_dir, threads=1, device="cpu")
    runner = HeadRunner(encoder, heads)
    fitted: dict[str, HeadCalibration] = {}
    for rows in calibration_sets(heads):
        logits = runner.sentence_logits(rows.head, rows.texts)
        if rows.head == "clinc150":
            fitted[rows.head] = _calibrate_intent(logits, rows.gold, heads["clinc150"].labels.index("oos"))
        else:
            fitted[rows.head] = calibrate_head(logits, rows.gold)
        runner.clear()
    from models.training.requests.render import build_requests

    calib = build_requests("calib")
    conf, correct = entity_confidence_rows(runner, ds.conll2003("dev"))
    request_conf, request_correct = entity_request_rows(runner, heads, calib)
    fitted["entities"] = summarise(np.concatenate([conf, request_conf]), np.concatenate([correct, request_correct]))
    runner.clear()
    task_logits = runner.sentence_logits("task", [_reader(ex) for ex in calib])
    gold = np.array([TASKS.index(ex.task) for ex in calib])
    fitted["task"] = _calibrate_task(task_logits, gold)
    fitted["labels"] = _calibrate_labels(runner, heads, calib, fitted)
    return Calibration(fitted, {"faq": calibrate_faq(encoder)})


def calibrate_faq(encoder: Encoder) -> ScoreCalibration:
    """P(the FAQ entry matched is right | its cosine score), so a FAQ match is weighed like the heads'
    probabilities: StackFAQ's queries against StackFAQ (right when the top entry is theirs) and CLINC150's
    out-of-scope validation queries against the same FAQ (never right)."""
    from models.faq import FaqEntry, FaqIndex

    def embed(texts: list[str]) -> np.ndarray:
        return np.stack([encoder.encode([t]).pooled[0] for t in texts])

    _, entries, queries = ds.stackfaq_faq()
    index = FaqIndex([FaqEntry(i, q, a, (q, a)) for i, q, a in entries], embed)
    oos = [t for t, label in ds.clinc150("val") if label == "oos"]
    matches = index.best(embed([q for q, _ in queries] + oos))
    correct = [m.entry.id == gold for m, (_, gold) in zip(matches, queries)] + [False] * len(oos)
    return fit_platt(np.array([m.score for m in matches]), np.array(correct))


def _reader(ex) -> str:
    return reader_text(ex.system, ex.user)


def _calibrate_intent(logits: np.ndarray, gold: np.ndarray, oos: int) -> HeadCalibration:
    """CLINC150: the temperature over every row; the keep threshold over the rows answered in scope
    (an out-of-scope prediction is never kept), so a kept intent is right ≥ the target share of the time."""
    base = calibrate_head(logits, gold)
    p = softmax(logits / base.temperature)
    pred = p.argmax(axis=1)
    answered = pred != oos
    return summarise(p.max(axis=1)[answered], (pred == gold)[answered], base.temperature)


def _calibrate_task(logits: np.ndarray, gold: np.ndarray) -> HeadCalibration:
    """The task head: temperature over all rows; threshold over rows predicted as a tier-1 ask, where a
    wrong task means a wrong tier-1 answer (sentiment and classification count as one ask, as the router
    takes them: ``models/router.py::asked_task``)."""
    from models.router import LABEL_TASKS, asked_task

    base = calibrate_head(logits, gold)
    p = softmax(logits / base.temperature)
    merged = {TASKS.index(t): TASKS.index(LABEL_TASKS[0]) for t in LABEL_TASKS}
    pred_task, confidence, correct = [], [], []
    for row, g in zip(p, gold):
        task, conf = asked_task(dict(zip(TASKS, row)))
        pred_task.append(task)
        confidence.append(conf)
        correct.append(merged.get(TASKS.index(task), TASKS.index(task)) == merged.get(int(g), int(g)))
    asked = np.isin(pred_task, ["sentiment", "classify", "entities", "intent"])
    return summarise(np.array(confidence)[asked], np.array(correct)[asked], base.temperature)


def label_scores(runner: HeadRunner, reader, text: str) -> tuple[list[str], np.ndarray | None]:
    """The labels a request names, as read, and the scorer's raw scores for them (None: unreadable)."""
    from models.tier1 import label_logits

    cls, tokens, offsets, _ = runner.states(text)
    reading = reader.read(text, "classify", {}, tokens, offsets)
    names = reading.parsed.labels
    if len(names) < 2 or not reading.payload_pieces:
        return names, None
    labels = np.stack([tokens[p].mean(axis=0) for p in reading.label_pieces])
    return names, label_logits(runner.heads, cls, tokens[reading.payload_pieces].mean(axis=0), labels)


def _calibrate_labels(runner: HeadRunner, heads, calib, fitted) -> HeadCalibration:
    """The label scorer, through the reading heads: rows whose label set was read right fit the
    temperature; every classification request counts for the threshold (a misread is a wrong answer)."""
    from models.reader import RequestReader

    reader = RequestReader(heads["task"], heads["span"])
    cases = []
    for ex in (ex for ex in calib if ex.task == "classify" and ex.gold):
        text = _reader(ex)
        names, scores = label_scores(runner, reader, text)
        cases.append(([n.lower() for n in names], scores, ex.gold.lower(), sorted(text[a:b].lower() for a, b in ex.labels)))
    fit = [(s, names.index(gold)) for names, s, gold, want in cases if s is not None and sorted(names) == want]
    temperature = _fit_ragged_temperature([s for s, _ in fit], [g for _, g in fit])
    conf, ok = [], []
    for names, scores, gold, _ in cases:
        if scores is None:
            conf.append(0.0)
            ok.append(False)
            continue
        p = softmax(scores / temperature)
        conf.append(float(p.max()))
        ok.append(names[int(p.argmax())] == gold)
    runner.clear()
    return summarise(np.array(conf), np.array(ok), temperature)


def _fit_ragged_temperature(scores: list[np.ndarray], golds: list[int]) -> float:
    """One temperature for score vectors of different lengths (label sets of 2-6 labels)."""
    if not scores:
        return 1.0

    def nll(t: float) -> float:
        return float(np.mean([-np.log(softmax(s / t)[g] + 1e-12) for s, g in zip(scores, golds)]))

    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 81))
    return float(min(grid, key=nll))
