"""Language identification: short and ambiguous English passes, other languages and scripts are flagged."""

from __future__ import annotations

import time

import pytest

from models.language import detect_language, is_supported, known_languages, scripts_of, unsupported_reason

# Short requests tier 1 gets, with names, URLs, numbers and code: all must count as English.
ENGLISH = [
    "Product is great!", "NER: Angela Merkel visited Paris.", "ok", "Sentiment?", "Intent?", "hello!", "thanks",
    "lol", "yes", "no", "great", "meh", "thx!!", "It's fine.", "asap pls", "where r u", "cancel my order",
    "Meet John at Paris cafe on Monday.", "What is our return policy?", "Write a professional follow-up.",
    "Compare these two business strategies.", "Classify as billing or shipping: my card was charged twice.",
    "Extract the company names: Nvidia and Samsung signed a deal.", "set an alarm for 7 am",
    "Is this review positive or negative? meh", "https://example.com/docs/api?id=42",
    "Call 555-0199 or mail jane.doe@example.com", "def foo(x): return x + 1", "SELECT * FROM users WHERE id = 3;",
    "x = [1, 2, 3]; print(sum(x))", "Order #48213 arrived damaged", "404 not found", "gr8 product, 10/10",
    "Emmanuel Macron met Olaf Scholz in Berlin.", "Jürgen Klopp joined Liverpool FC.", "Tokyo, Osaka, Kyoto",
    "Angela Merkel, Berlin, Siemens", "Tesla Model 3 vs BMW i4", "Microsoft acquired GitHub in 2018.",
    "François Hollande and José Mourinho", "Pedro Almodóvar, Penélope Cruz and Javier Bardem",
    "Renault Clio, Peugeot 208 and Citroën C3", "Santiago de Compostela is in Galicia.",
    "Sentiment: Das Boot was a masterpiece.", "Please classify: Müller GmbH invoice overdue",
    "Find the people: Xi Jinping met Narendra Modi.", "Tag the entities in: Carlos Sainz drove for Ferrari in Monza.",
    "Sentiment of: the croissant at Café de Flore was stale", "Danke is German for thanks.",
    "The battery died after a day, awful.", "Can I pay with PayPal?", "Where is my package?", "Is shipping free?",
    "I loved every minute.", "FAQ: refund timing", "Label: spam or ham", "What's the intent here?",
    "The pasta at Luigi's was amazing", "Label the intent: I need to change my PIN", "OMG this is sooo good",
]

FOREIGN = [
    ("fr", "Le produit est génial !"), ("fr", "Où est mon colis ?"), ("fr", "Je voudrais annuler ma commande."),
    ("fr", "Quelle est votre politique de retour ?"), ("fr", "Merci beaucoup pour votre aide"),
    ("fr", "Le service client est nul."), ("fr", "Bonjour, je cherche ma facture"),
    ("de", "Das Produkt ist großartig!"), ("de", "Wo ist mein Paket?"),
    ("de", "Ich möchte meine Bestellung stornieren."),
    ("de", "Wie lange dauert der Versand?"), ("de", "Vielen Dank für Ihre Hilfe"), ("de", "Das ist nicht gut"),
    ("es", "¡El producto es genial!"), ("es", "¿Dónde está mi paquete?"), ("es", "Quiero cancelar mi pedido."),
    ("es", "¿Cuánto cuesta el envío?"), ("es", "No me gusta nada este producto."),
    ("pt", "O produto é ótimo!"), ("pt", "Onde está a minha encomenda?"), ("pt", "Quero cancelar o meu pedido."),
    ("pt", "Muito obrigado pela ajuda"),
    ("it", "Il prodotto è fantastico!"), ("it", "Dov'è il mio pacco?"), ("it", "Vorrei annullare il mio ordine."),
    ("it", "Non funziona più."),
    ("nl", "Het product is geweldig!"), ("nl", "Waar is mijn pakket?"), ("nl", "Ik wil mijn bestelling annuleren."),
    ("pl", "Produkt jest świetny!"), ("tr", "Ürün harika, çok beğendim!"), ("sv", "Produkten är fantastisk!"),
    ("zh", "这个产品很好！"), ("zh", "我的包裹在哪里？"), ("ja", "この製品は素晴らしいです！"), ("ja", "荷物はどこですか？"),
    ("ru", "Продукт отличный!"), ("ru", "Где моя посылка?"), ("ar", "المنتج رائع!"), ("ar", "أين طردي؟"),
    ("ko", "제품이 훌륭해요!"), ("hi", "उत्पाद बहुत अच्छा है!"), ("el", "Το προϊόν είναι εξαιρετικό!"),
]


@pytest.mark.parametrize("text", ENGLISH)
def test_short_and_ambiguous_english_is_supported(text):
    assert is_supported(text, {"en"}), unsupported_reason(text, {"en"})


@pytest.mark.parametrize("lang,text", FOREIGN)
def test_other_languages_are_flagged(lang, text):
    assert not is_supported(text, {"en"})


def test_detection_accuracy_and_latency():
    texts = [t for _, t in FOREIGN]
    detect_language("warm up")
    started = time.perf_counter()
    found = [detect_language(t)[0] for t in texts]
    per_text_ms = (time.perf_counter() - started) / len(texts) * 1000
    right = sum(f == lang for f, (lang, _) in zip(found, FOREIGN))
    assert right / len(FOREIGN) >= 0.95, list(zip(found, FOREIGN))
    assert per_text_ms < 0.5
    sentences = ["What is our return policy?", "Compare these two business strategies.", "I loved every minute.",
                 "Classify as billing or shipping: my card was charged twice."]
    assert [detect_language(t)[0] for t in sentences] == ["en"] * 4


def test_nothing_to_tell():
    assert detect_language("") == ("und", 0.0)
    assert detect_language("42 / 7 = 6") == ("und", 0.0)


def test_reason_names_the_language_or_script():
    assert "fr" in unsupported_reason("Je voudrais annuler ma commande.", {"en"})
    assert "Cyrillic" in unsupported_reason("Где моя посылка?", {"en"})
    assert "Chinese characters" in unsupported_reason("我的包裹在哪里？", {"en"})


def test_a_foreign_payload_under_an_english_instruction_is_flagged_by_script():
    assert not is_supported("Classify the sentiment: Продукт отличный!", {"en"})
    # One stray letter of another script (a symbol in a formula) is not a language.
    assert is_supported("The angle π is larger than the one in the second diagram we drew", {"en"})


def test_supported_languages_beyond_english():
    assert is_supported("Das Produkt ist großartig!", {"en", "de"})
    assert is_supported("Где моя посылка?", {"en", "ru"})
    assert not is_supported("Где моя посылка?", {"en", "de"})
    assert scripts_of({"ja"}) == {"LATIN", "CJK", "HIRAGANA", "KATAKANA"}


def test_known_languages():
    assert {"en", "fr", "de", "zh"} <= known_languages()
    assert "xx" not in known_languages()
