"""The price table: what each answer cost, and what the reference frontier model would have charged."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

log = logging.getLogger(__name__)

# A provider's dated or moving snapshot of a model: gpt-4o-mini-2024-07-18, claude-3-5-sonnet-20241022,
# gpt-4-0613, gpt-4o-latest. They are priced as the model they are a snapshot of.
_SNAPSHOT = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8}|\d{4}|latest|preview)$")


class ModelPrice(BaseModel):
    """USD per million input and output tokens."""

    model_config = ConfigDict(extra="forbid")
    input: float = Field(ge=0)
    output: float = Field(ge=0)


class PriceFile(BaseModel):
    """Shape of ``configs/prices.yaml``."""

    model_config = ConfigDict(extra="forbid")
    reference_model: str
    models: dict[str, ModelPrice]


class PriceTable:
    """Costs from real token counts; unknown models are priced at the reference (no claimed savings)."""

    def __init__(self, reference_model: str, models: dict[str, ModelPrice]):
        if reference_model not in models:
            raise ValueError(f"reference_model {reference_model!r} has no price in the table")
        self.reference_model, self.models = reference_model, models
        self._warned: set[str] = set()

    @classmethod
    def load(cls, path: Path, reference_model: str | None = None) -> "PriceTable":
        """Read and validate a price file, with ``reference_model`` in place of its own when given; errors
        name the file and the field."""
        try:
            data = PriceFile.model_validate(yaml.safe_load(Path(path).read_text()))
            return cls(reference_model or data.reference_model, data.models)
        except ValidationError as exc:
            fields = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"{path}: {fields}") from exc
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc

    def entry(self, model: str) -> str | None:
        """The table entry ``model`` is priced by: itself, or the model a dated snapshot name belongs to
        (``gpt-4o-mini-2024-07-18`` → ``gpt-4o-mini``); None when neither is listed."""
        name = model
        while name not in self.models:
            shorter = _SNAPSHOT.sub("", name)
            if shorter == name:
                return None
            name = shorter
        return name

    def price(self, model: str) -> ModelPrice:
        """The model's price (a dated snapshot's is its model's), or the reference price (logged once) when
        it is not in the table."""
        entry = self.entry(model)
        if entry is not None:
            return self.models[entry]
        if model not in self._warned:
            self._warned.add(model)
            log.warning("no price for model %r: priced at the reference %r", model, self.reference_model)
        return self.models[self.reference_model]

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        """USD for a request answered by ``model``."""
        p = self.price(model)
        return (prompt_tokens * p.input + completion_tokens * p.output) / 1e6

    def baseline(self, prompt_tokens: int, completion_tokens: int) -> float:
        """USD the same tokens would have cost on the reference frontier model."""
        return self.cost(self.reference_model, prompt_tokens, completion_tokens)
