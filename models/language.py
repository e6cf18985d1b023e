"""Which language a request is written in, and whether tier 1's models can read it.

Tier 1's encoder and heads were trained on English; a request in another language goes up a tier rather
than getting a confident answer to a text the models cannot read. Identification uses py3langid (a naive
Bayes model over byte n-grams, shipped inside the wheel: nothing is downloaded at run time; ~0.03 ms a
sentence here).

Short requests are the hard part: "ok", "Sentiment?" or "Angela Merkel, Berlin, Siemens" carry almost no
evidence, and names pull the classifier towards their own language. So :func:`unsupported_reason` flags
a text only when the evidence is strong: letters of a script none of the supported languages is written
in, or a foreign language that wins clearly both on the text and on the text without its capitalised
words (names), after URLs, e-mail addresses, numbers and code-like tokens are removed.
"""

from __future__ import annotations

import copy
import functools
import re
import unicodedata

# Candidate languages: the widely written ones. Against all 140 of py3langid's languages, short English
# is often called Nigerian Pidgin, Albanian or Afrikaans; among these it rarely is, and a text in a rarer
# language still comes out as foreign (as a relative of its own), which is all the check needs.
CANDIDATES = frozenset(
    "en fr de es pt it nl pl tr sv da no fi cs sk ro hu id ms ru uk bg zh ja ko ar fa he hi el vi th ca hr sl et "
    "lv lt".split()
)
# Probability a foreign language needs, on the text and on the text without names, to count as the
# text's language. Measured on the short texts of tests/models/test_language.py: English texts top out
# at 0.50 (a sentence made of French and Portuguese names), foreign ones start at 0.73.
FOREIGN_MIN_PROBABILITY = 0.6
# Letters in a script no supported language uses, as a share of all letters, that make a text foreign.
FOREIGN_SCRIPT_MIN_SHARE = 0.1
# The classifier needs this many words (after the noise is removed) to say anything.
MIN_WORDS = 2
# Identification reads the start of a text; a page of text says no more than its first lines.
MAX_CHARS = 1000

# Scripts of the non-Latin candidates (Unicode character-name prefixes); every other language is Latin.
_SCRIPTS = {
    "ru": {"CYRILLIC"}, "uk": {"CYRILLIC"}, "bg": {"CYRILLIC"}, "sr": {"CYRILLIC"}, "mk": {"CYRILLIC"},
    "be": {"CYRILLIC"}, "kk": {"CYRILLIC"}, "ky": {"CYRILLIC"}, "mn": {"CYRILLIC"}, "tg": {"CYRILLIC"},
    "zh": {"CJK"}, "yue": {"CJK"}, "wuu": {"CJK"}, "ja": {"CJK", "HIRAGANA", "KATAKANA"}, "ko": {"HANGUL", "CJK"},
    "ar": {"ARABIC"}, "fa": {"ARABIC"}, "ur": {"ARABIC"}, "ps": {"ARABIC"}, "ug": {"ARABIC"},
    "he": {"HEBREW"}, "hi": {"DEVANAGARI"}, "mr": {"DEVANAGARI"}, "ne": {"DEVANAGARI"}, "sa": {"DEVANAGARI"},
    "el": {"GREEK"}, "th": {"THAI"}, "bn": {"BENGALI"}, "ta": {"TAMIL"}, "te": {"TELUGU"}, "gu": {"GUJARATI"},
    "kn": {"KANNADA"}, "ml": {"MALAYALAM"}, "pa": {"GURMUKHI"}, "si": {"SINHALA"}, "hy": {"ARMENIAN"},
    "ka": {"GEORGIAN"}, "am": {"ETHIOPIC"}, "km": {"KHMER"}, "lo": {"LAO"}, "my": {"MYANMAR"},
}
_SCRIPT_NAMES = {"CJK": "Chinese characters", "HANGUL": "Hangul", "HIRAGANA": "Hiragana", "KATAKANA": "Katakana"}
# Letters whose names start with these belong to no script in particular (ª, º, modifier letters).
_COMMON_LETTERS = ("MODIFIER", "FEMININE", "MASCULINE")

# URLs, e-mail addresses, @handles and #tags, tokens with digits (order numbers, versions) and code-like
# tokens (identifiers with _ . ( = etc.): none of them says which language the sentence is in.
_NOISE = re.compile(r"https?://\S+|www\.\S+|\S+@\S+|[#@]\w+|\S*\d\S*|\S*[_=(){}\[\];<>/\\]\S*")
_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")


@functools.cache
def _full_identifier():
    """py3langid's model over all its languages (loaded once, ~0.7 s)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


@functools.cache
def _identifier(languages: frozenset[str]):
    """The identifier restricted to ``languages``; the copy shares the model's arrays."""
    restricted = copy.copy(_full_identifier())
    restricted.set_languages(sorted(languages))
    return restricted


@functools.cache
def known_languages() -> frozenset[str]:
    """The ISO 639 codes the identifier knows (what ``tier1.languages`` may name)."""
    return frozenset(_full_identifier().labels)


def preload() -> None:
    """Load the identifier now (~0.7 s), so that the first request does not pay for it."""
    _identifier(CANDIDATES)


def _words(text: str) -> list[str]:
    return _WORD.findall(_NOISE.sub(" ", text[:MAX_CHARS]))


def _without_names(words: list[str]) -> list[str]:
    # Capitalised words after the first are mostly names (Macron, Berlin, Siemens), and names belong to
    # no language; German capitalises its nouns too, but keeps enough lower-case words to be recognised.
    return [w for i, w in enumerate(words) if i == 0 or not w[:1].isupper()]


def _classify(words: list[str], languages: frozenset[str]) -> tuple[str, float]:
    if not words:
        return "und", 0.0
    lang, prob = _identifier(languages).classify(" ".join(words))
    return lang, float(prob)


def detect_language(text: str) -> tuple[str, float]:
    """The language of ``text`` as an ISO 639-1 code (``und`` when there is nothing to tell) and the
    classifier's probability, among the widely written languages (:data:`CANDIDATES`).

    URLs, e-mail addresses, numbers and code-like tokens are ignored. The probability is the classifier's
    own: on a text of one or two words it says little.
    """
    return _classify(_words(text), CANDIDATES)


def _script(ch: str) -> str | None:
    """The script of a letter, by its Unicode name (LATIN, CYRILLIC, CJK, ...); None for common letters."""
    name = unicodedata.name(ch, "")
    if not name or name.startswith(_COMMON_LETTERS):
        return None
    return "LATIN" if "LATIN" in name else name.split(" ", 1)[0]


def scripts_of(languages: set[str] | frozenset[str]) -> set[str]:
    """The scripts the given languages are written in; Latin always counts (names, code, URLs)."""
    return {"LATIN"}.union(*(_SCRIPTS.get(lang, set()) for lang in languages))


def unsupported_reason(text: str, languages: set[str] | frozenset[str]) -> str | None:
    """Why ``text`` is not in one of ``languages`` (ISO 639-1 codes), or None when it is or may be.

    A text counts as supported unless the evidence against it is strong: letters of a script that none
    of ``languages`` is written in make up at least 10% of its letters, or another language wins with
    probability at least :data:`FOREIGN_MIN_PROBABILITY` on the text and again on the text without its
    capitalised words (names). Texts of fewer than two words, names alone, URLs, numbers and code pass.
    """
    languages = frozenset(languages)
    allowed = scripts_of(languages)
    letters = [s for s in map(_script, (c for c in text[:MAX_CHARS] if c.isalpha())) if s is not None]
    foreign = [s for s in letters if s not in allowed]
    if letters and len(foreign) >= FOREIGN_SCRIPT_MIN_SHARE * len(letters):
        script = max(set(foreign), key=foreign.count)
        name = _SCRIPT_NAMES.get(script, f"{script.title()} script")
        return f"the text is written in {name}, and tier 1 reads only {', '.join(sorted(languages))}"
    words = _words(text)
    if len(words) < MIN_WORDS:
        return None
    candidates = CANDIDATES | (languages & known_languages())
    lang, prob = _classify(words, candidates)
    if lang in languages or prob < FOREIGN_MIN_PROBABILITY:
        return None
    stripped_lang, stripped_prob = _classify(_without_names(words), candidates)
    if stripped_lang in languages or stripped_prob < FOREIGN_MIN_PROBABILITY:
        return None
    return f"the text looks {lang} (p={prob:.2f}), and tier 1 reads only {', '.join(sorted(languages))}"


def is_supported(text: str, languages: set[str] | frozenset[str]) -> bool:
    """Whether tier 1's models, which read ``languages``, can read ``text`` (see :func:`unsupported_reason`)."""
    return unsupported_reason(text, languages) is None
