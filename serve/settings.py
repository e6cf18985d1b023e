"""Typed settings: ``configs/tierwise.yaml`` (or the file named by ``TIERWISE_CONFIG`` or passed to
:func:`load_settings`), overridden by ``TIERWISE_*`` environment variables (nested with ``__``, e.g.
``TIERWISE_STORE__URL``; lists and mappings as JSON).

:func:`load_settings` validates everything at start-up; a bad value fails with the file and the field.
"""

from __future__ import annotations

import os
import re
import string
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import yaml
from pydantic import AfterValidator, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from deployments.config import Section, Tier2Settings, describe_errors
from models.calibration import CALIBRATED_HEADS
from serve.tenancy.auth import TENANT
from serve.tenancy.limits import TenantLimits
from serve.tenancy.pricing import PriceTable
from serve.tenancy.tokens import TokenSettings

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "configs" / "tierwise.yaml"
# The intent head whose labels ``tier1.intent_responses`` names: the multi-task model's CLINC150 head.
INTENT_HEAD_FILE = "clinc150.npz"
# What a tenant may be called (it is part of Redis keys).
_TENANT_NAME = TENANT.pattern


class ConfigError(Exception):
    """A configuration value is missing or invalid; the message names the file and the field."""


class EncoderSettings(Section):
    """The shared MiniLM encoder."""

    model_dir: Path = REPO_ROOT / "models" / "artifacts" / "encoder"
    max_tokens: int = Field(128, ge=8, le=512)
    threads: int = Field(1, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"


class BatchSettings(Section):
    """Replicas, CPU share and ``@serve.batch`` knobs of one batched deployment."""

    num_replicas: int = Field(1, ge=1)
    num_cpus: float = Field(0.5, ge=0)
    max_batch_size: int = Field(32, ge=1)
    batch_wait_timeout_s: float = Field(0.001, ge=0)


class QualitySettings(Section):
    """The choice between tier 2 and tier 3 on predicted quality (``models/quality.py``)."""

    # Calibrated probability that a tier-2 model answers well enough (models/quality.py), which a
    # generative request needs to stay on tier 2. `tierwise calibrate` fits it to a tier mix or a budget.
    threshold: float = Field(0.5, ge=0, le=1)
    # The benchmark model (a quality head) a tier-2 model stands in for when its entry names none.
    tier2_as: str = "mixtral-8x7b-instruct"
    # What the threshold was fitted to and on, written by `tierwise calibrate`.
    fitted: str = ""


class RouterSettings(Section):
    """The learned router and its thresholds."""

    heads_dir: Path = REPO_ROOT / "models" / "heads"
    context_weight: float = Field(0.3, ge=0, le=1)
    sticky_max_confidence: float = Field(0.9, ge=0, le=1)
    gpu: Literal["auto", "never", "always"] = "auto"
    # gateway: in the gateway replica, no handle hop (what meets the CPU latency budget); deployment: its
    # own replicas; auto: a deployment when it gets a GPU, else the gateway.
    placement: Literal["auto", "gateway", "deployment"] = "auto"
    batching: BatchSettings = BatchSettings()
    gpu_batching: BatchSettings = BatchSettings(max_batch_size=256, batch_wait_timeout_s=0.002)
    quality: QualitySettings = QualitySettings()


class Rule(Section):
    """A pattern with a canned answer, checked before any model."""

    name: str
    pattern: str
    answer: str
    ignore_case: bool = True

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from exc
        return value


def _check_intent_response(text: str) -> str:
    """A canned intent response: non-blank, and ``{intent}`` its only placeholder (``{{``/``}}`` for braces)."""
    if not text.strip():
        raise ValueError("the response is blank")
    try:
        fields = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(text) if f is not None]
    except ValueError as exc:
        raise ValueError(f"not a valid response template ({exc}); write {{{{ and }}}} for literal braces") from exc
    for name, spec, conversion in fields:
        if name != "intent" or spec or conversion:
            found = name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
            raise ValueError(f"the only placeholder a response may use is {{intent}}, found {{{found}}}")
    return text


IntentResponse = Annotated[str, AfterValidator(_check_intent_response)]


class Tier1Settings(Section):
    """Tier-1 micro-models, FAQ, rules, and what tier 1 may answer."""

    model_name: str = "tierwise-tier1"
    faq_path: Path = REPO_ROOT / "configs" / "faq.yaml"
    # Calibrated probability that the best FAQ entry is the right one (Platt scaling of its cosine
    # similarity, fitted by `tierwise train`); 0.979 is a cosine of about 0.75.
    faq_min_confidence: float = Field(0.979, ge=0, le=1)
    # Overrides of the calibrated keep thresholds (models/heads/calibration.json), by head; empty: calibrated.
    min_confidence: dict[Literal[CALIBRATED_HEADS], float] = {}
    rules: list[Rule] = []
    # When tier 1 is unsure and no higher tier can answer (none deployed, or tier 3 unconfigured): answer
    # with tier 1's best answer, marked low_confidence; refuse: a 503 that says why.
    when_unsure: Literal["answer", "refuse"] = "answer"
    # Languages tier 1's models read (ISO 639-1); a request in another one goes to a higher tier.
    languages: list[str] = Field(["en"], min_length=1)
    # Canned responses by intent name (an intent of the intent head); ``{intent}`` is the intent's name.
    intent_responses: dict[str, IntentResponse] = {}
    # gateway: heads in the gateway replica (they reuse the router's pass); deployment: a CPU pool.
    placement: Literal["gateway", "deployment"] = "gateway"
    batching: BatchSettings = BatchSettings()

    @field_validator("languages")
    @classmethod
    def _known_languages(cls, languages: list[str]) -> list[str]:
        from models.language import known_languages

        unknown = [code for code in languages if code not in known_languages()]
        if unknown:
            raise ValueError(f"unknown language code(s) {', '.join(map(repr, unknown))}; use ISO 639-1 codes "
                             f"such as en, fr, de")
        return languages


class ProviderSettings(Section):
    """One OpenAI-compatible provider for tier 3."""

    name: str
    base_url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = Field(30.0, gt=0)
    max_retries: int = Field(2, ge=0)
    allow_no_key: bool = False


class AutoscalingSettings(Section):
    """Serve's autoscaling of one deployment: replicas between the bounds, sized to keep each replica at
    about ``target_ongoing_requests``."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    target_ongoing_requests: float = Field(gt=0)

    @model_validator(mode="after")
    def _bounds(self) -> "AutoscalingSettings":
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) exceeds max_replicas ({self.max_replicas})")
        return self


class CapacitySettings(Section):
    """How much one deployment takes on: requests in flight per replica, and its replicas (fixed, or
    autoscaled when ``autoscaling`` is set)."""

    # Serve's default is 5, at which a handful of slow tier-3 streams would queue every fast tier-1 request
    # behind them; a replica's event loop holds hundreds of waiting streams at no cost.
    max_ongoing_requests: int = Field(256, ge=1)
    num_replicas: int = Field(1, ge=1)
    autoscaling: AutoscalingSettings | None = None
    # How long a stopping replica may take to finish its requests in flight before it is killed: within
    # Kubernetes' default 30 s grace period, with room for the drain (http.drain_s) and the rest of the stop.
    graceful_shutdown_timeout_s: float = Field(20.0, gt=0, le=25)
    # At most this many replicas on one node (unset: no bound). 1 spreads the replicas over the nodes, so
    # that losing a node loses one replica, not all of them.
    max_replicas_per_node: int | None = Field(None, ge=1)

    def options(self) -> dict:
        """The deployment's ``.options(...)`` for these settings."""
        common = {"max_ongoing_requests": self.max_ongoing_requests,
                  "graceful_shutdown_timeout_s": self.graceful_shutdown_timeout_s}
        if self.max_replicas_per_node is not None:
            common["max_replicas_per_node"] = self.max_replicas_per_node
        if self.autoscaling is not None:
            return common | {"autoscaling_config": self.autoscaling.model_dump()}
        return common | {"num_replicas": self.num_replicas}


class Tier3Settings(Section):
    """Frontier providers, tried in order, and the forwarder's capacity."""

    providers: list[ProviderSettings] = []
    capacity: CapacitySettings = CapacitySettings()


class StoreSettings(Section):
    """Conversation state."""

    backend: Literal["auto", "redis", "memory"] = "auto"
    url: str = "redis://127.0.0.1:6379/0"
    prefix: str = "tierwise"
    ttl_s: int = Field(86400, ge=1)
    # At least a whole request's messages (http.max_messages) plus the answer, so a client that resends its
    # history is recognised as resending it.
    max_messages: int = Field(512, ge=2)


class HttpSettings(Section):
    """The HTTP front and its input limits."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    max_body_bytes: int = Field(1_000_000, ge=1024)
    max_message_chars: int = Field(100_000, ge=1)
    max_messages: int = Field(256, ge=1)
    # The tenant of requests without a Tierwise API key; with require_api_key, there are none.
    tenant: str = Field("default", pattern=_TENANT_NAME)
    require_api_key: bool = False
    num_cpus: float = Field(0.5, ge=0)
    # The gateway deployment's requests in flight per replica and its replicas.
    capacity: CapacitySettings = CapacitySettings()
    # How long a stopping gateway replica still accepts connections, so that whatever balances in front of
    # it (HAProxy here, a cloud load balancer in front of a cluster) stops sending before it refuses. Serve's
    # own default is 30 s, which alone uses up Kubernetes' grace period; the local HAProxy retries a refused
    # connection on another replica, so 2 s is enough there. Applied as Serve's
    # RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S, which must be set before Ray starts.
    drain_s: float = Field(2.0, ge=0, le=20)


PiiPolicy = Literal["allow", "keep_in_cluster", "redact"]


class TenantPolicy(TenantLimits):
    """What one tenant may spend (the limits of :class:`serve.tenancy.limits.TenantLimits`; unset is unlimited) and
    where its personal data may go."""

    # Requests whose messages carry PII (e-mails, phone, card and account numbers, names, street addresses):
    # `allow` sends them wherever the router says; `keep_in_cluster` answers them on tiers 1-2 only;
    # `redact` lets tier 3 answer them with the PII replaced by placeholders, restored in the answer.
    pii: PiiPolicy = "allow"

    @property
    def limited(self) -> bool:
        """Whether any limit is set (an unlimited tenant's requests skip the limits store)."""
        return any(v is not None for v in (self.requests_per_minute, self.tokens_per_minute,
                                           self.spend_per_day_usd))


class TenantsFile(Section):
    """The file ``tenants.file`` names: the policy of tenants not listed, and each listed tenant's."""

    default: TenantPolicy = TenantPolicy()
    tenants: dict[Annotated[str, Field(pattern=_TENANT_NAME)], TenantPolicy] = {}


class TenantSettings(TenantsFile):
    """Tenants' policies, inline or from ``file`` (YAML of :class:`TenantsFile`; inline entries win)."""

    file: Path | None = None

    @model_validator(mode="after")
    def _load_file(self) -> "TenantSettings":
        if self.file is None:
            return self
        path = Path(self.file)
        if not path.is_file():
            raise ValueError(f"file: file {path} does not exist")
        try:
            loaded = TenantsFile.model_validate(yaml.safe_load(path.read_text()) or {})
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not valid YAML: {exc}") from exc
        except ValidationError as exc:
            raise ValueError(f"{path}: {describe_errors(exc)}") from None
        if "default" not in self.model_fields_set:
            self.default = loaded.default
        self.tenants = loaded.tenants | self.tenants
        return self

    def policy(self, tenant: str) -> TenantPolicy:
        """``tenant``'s policy (the default one when it has none of its own)."""
        return self.tenants.get(tenant, self.default)


class UsageSettings(Section):
    """The usage ledger behind ``GET /v1/usage``."""

    retention_days: int = Field(400, ge=1)


class PricingSettings(Section):
    """Where the price table lives, and the reference model baselines are priced on (default: the table's)."""

    path: Path = REPO_ROOT / "configs" / "prices.yaml"
    # A replay of recorded GPT-4-1106 answers prices its baseline on GPT-4-1106 (make serve-replay sets it).
    reference_model: str | None = None

    def table(self) -> PriceTable:
        """The price table, its reference model overridden when set; errors name the file and the field."""
        return PriceTable.load(self.path, self.reference_model)


class Settings(BaseSettings):
    """Everything Tierwise reads at start-up."""

    model_config = SettingsConfigDict(env_prefix="TIERWISE_", env_nested_delimiter="__", extra="forbid")

    encoder: EncoderSettings = EncoderSettings()
    router: RouterSettings = RouterSettings()
    tier1: Tier1Settings = Tier1Settings()
    tier2: Tier2Settings = Tier2Settings()
    tier3: Tier3Settings = Tier3Settings()
    store: StoreSettings = StoreSettings()
    http: HttpSettings = HttpSettings()
    pricing: PricingSettings = PricingSettings()
    tenants: TenantSettings = TenantSettings()
    usage: UsageSettings = UsageSettings()
    # Model names counted by another tokenizer than their name says (an encoding, or a tokenizer.json).
    tokens: TokenSettings = TokenSettings()

    @model_validator(mode="after")
    def _files_exist(self) -> "Settings":
        for field, path in (("tier1.faq_path", self.tier1.faq_path), ("pricing.path", self.pricing.path)):
            if not Path(path).is_file():
                raise ValueError(f"{field}: file {path} does not exist")
        return self

    @model_validator(mode="after")
    def _store_holds_a_request(self) -> "Settings":
        if self.store.max_messages <= self.http.max_messages:
            raise ValueError(f"store.max_messages ({self.store.max_messages}) must exceed http.max_messages "
                             f"({self.http.max_messages}): a request's messages and its answer must fit the store")
        return self

    @model_validator(mode="after")
    def _intents_exist(self) -> "Settings":
        head = Path(self.router.heads_dir) / INTENT_HEAD_FILE
        if not self.tier1.intent_responses or not head.is_file():
            return self
        with np.load(head, allow_pickle=False) as data:
            known = {str(label) for label in data["labels"]}
        for name in self.tier1.intent_responses:
            if name not in known:
                raise ValueError(f"tier1.intent_responses.{name}: the intent head ({head}) has no intent {name!r}")
        return self

    @model_validator(mode="after")
    def _quality_heads_exist(self) -> "Settings":
        from models.quality import QUALITY_FILE, canonical

        path = Path(self.router.heads_dir) / QUALITY_FILE
        if not path.is_file():
            return self
        with np.load(path, allow_pickle=False) as data:
            known = {str(m) for m in data["models"]}
        wanted = [("router.quality.tier2_as", self.router.quality.tier2_as)]
        wanted += [(f"tier2.models[{m.name}].quality_as", m.quality_as) for m in self.tier2.models if m.quality_as]
        for field, model in wanted:
            if canonical(model) not in known:
                raise ValueError(f"{field}: no quality head for {model!r} ({path}); choose one of "
                                 f"{', '.join(sorted(known))}")
        return self

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings) -> tuple[PydanticBaseSettingsSource, ...]:
        """The environment wins over the arguments, which :func:`load_settings` fills from the file."""
        return env_settings, init_settings


def _resolve_relative(data: dict, base: Path) -> None:
    """Paths in a config file are relative to that file's folder."""
    for section, key in (("encoder", "model_dir"), ("router", "heads_dir"), ("tier1", "faq_path"), ("pricing", "path"),
                         ("tier2", "models_file"), ("tenants", "file")):
        value = (data.get(section) or {}).get(key)
        if isinstance(value, str) and not Path(value).is_absolute():
            data[section][key] = str((base / value).resolve())


def read_yaml_mapping(path: Path, what: str) -> dict:
    """The YAML mapping in ``path`` ({} for an empty file); :class:`ConfigError` naming the file when it is
    missing, not YAML, or not a mapping of ``what``."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of {what}")
    return data or {}


def load_settings(path: Path | str | None = None) -> Settings:
    """Read and validate the settings; raise :class:`ConfigError` naming the file and the field."""
    config_path = Path(path or os.environ.get("TIERWISE_CONFIG", DEFAULT_CONFIG))
    data = read_yaml_mapping(config_path, "sections")
    _resolve_relative(data, config_path.parent)
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(f"{config_path}: {describe_errors(exc)} (fields may also come from TIERWISE_* variables)") from exc


