"""Synthetic chat requests: real data-set texts wrapped in natural instructions, with exact character spans.

Tier 1 must read a request as *instruction + payload*: "Is this review positive or negative? '…'" asks for
sentiment, "Translate '…' into German" wraps the very same kind of text but asks for generation. These
requests teach the multi-task encoder to read what is asked (the task, the payload span, the labels and
entity types the request names) and measure, on held-out templates and test-split texts, whether tier 1
understood. What matters is the variety of phrasings, not volume: the templates
(``templates.yaml``) vary word order, quoting, politeness, terseness and casing,
and code varies quoting styles, list styles, label wordings and system prompts on top.

Splits never mix:

* ``train``: train templates, train-split payload rows;
* ``calib``: train templates, dev/val-split rows (for thresholds);
* ``test``: held-out templates (about a quarter of each group, :func:`template_split`), test-split rows.

Data sets without a dev split (and SST-2, whose dev set is a reporting split) give calib the tenth of
their train rows that fine-tuning holds out for calibration (``datasets.is_calibration_row``; source
``<set>:train-heldout``), and train never holds a row fine-tuning holds out that way (SST, TweetEval
sentiment and review sentences included). Single-file sets (JHU COVID queries, StackFAQ by FAQ id,
Arena-Hard, Vicuna) are hash-split 60/20/20. Four label sets (TREC, TweetEval offensive and hate, CLINC
domains) never reach train, so the report can measure zero-shot classification into unseen label sets.
Train and calib rows whose text also occurs in a test split are dropped. The one template every split
shares is ``bare``: a message with no wrapper at all (a plain FAQ question or prompt), which has no
phrasing to hold out.
"""

from models.training.requests.leaks import leak_check
from models.training.requests.pools import Pools, load_pools
from models.training.requests.render import RequestExample, build_requests, read_fixture, write_fixture
from models.training.requests.templates import template_split

__all__ = ["Pools", "RequestExample", "build_requests", "leak_check", "load_pools", "read_fixture", "template_split",
           "write_fixture"]
