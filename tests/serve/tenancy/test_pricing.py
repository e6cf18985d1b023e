"""Price table: costs from token counts, the reference baseline, validation."""

from __future__ import annotations

import pytest

from serve.tenancy.pricing import PriceTable


def test_costs_and_baseline(settings):
    prices = PriceTable.load(settings.pricing.path)
    assert prices.cost("gpt-4o", 1_000_000, 0) == pytest.approx(2.5)
    assert prices.cost("gpt-4o", 1000, 500) == pytest.approx((1000 * 2.5 + 500 * 10) / 1e6)
    assert prices.baseline(1000, 500) == prices.cost(prices.reference_model, 1000, 500)
    assert prices.cost("tierwise-tier1", 20, 5) < prices.baseline(20, 5) / 100


def test_unknown_model_is_priced_at_reference(settings, caplog):
    prices = PriceTable.load(settings.pricing.path)
    assert prices.cost("some-new-model", 100, 100) == prices.baseline(100, 100)
    assert "no price for model 'some-new-model'" in caplog.text


def test_bad_price_file_names_the_field(tmp_path):
    path = tmp_path / "prices.yaml"
    path.write_text("reference_model: gpt-4o\nmodels:\n  gpt-4o: {input: -1, output: 2}\n")
    with pytest.raises(ValueError, match=r"prices.yaml: models.gpt-4o.input"):
        PriceTable.load(path)
    path.write_text("reference_model: gpt-5\nmodels:\n  gpt-4o: {input: 1, output: 2}\n")
    with pytest.raises(ValueError, match="reference_model 'gpt-5' has no price"):
        PriceTable.load(path)


@pytest.mark.parametrize("dated,entry", [("gpt-4o-mini-2024-07-18", "gpt-4o-mini"), ("gpt-4o-2024-08-06", "gpt-4o"),
                                         ("claude-haiku-4-5-20251001", "claude-haiku-4-5"), ("gpt-4.1-latest", "gpt-4.1")])
def test_a_dated_snapshot_is_priced_as_its_model(settings, caplog, dated, entry):
    prices = PriceTable.load(settings.pricing.path)
    assert prices.entry(dated) == entry
    assert prices.cost(dated, 1000, 500) == prices.cost(entry, 1000, 500)
    assert "no price" not in caplog.text


def test_a_snapshot_of_an_unlisted_model_is_still_unknown(settings):
    prices = PriceTable.load(settings.pricing.path)
    assert prices.entry("mistral-large-2411") is None and prices.entry("gpt-4o-mini") == "gpt-4o-mini"


def test_the_settings_can_price_baselines_on_another_reference_model():
    from serve.settings import PricingSettings

    table = PricingSettings(reference_model="gpt-4-1106-preview").table()
    assert table.reference_model == "gpt-4-1106-preview"
    assert table.baseline(1_000_000, 0) == table.price("gpt-4-1106-preview").input
    with pytest.raises(ValueError, match="prices.yaml: reference_model 'gpt-9' has no price"):
        PricingSettings(reference_model="gpt-9").table()
