"""The typed configuration of the tier-2 deployments: each model's Ray Serve LLM ``LLMConfig`` as its docs
write it, what Tierwise adds to it (tasks, adapters, confidence, the quality head it stands for), and the
checks a production deployment must pass before :func:`deployments.tier2.build_tier2` builds it.

The gateway's settings (``serve/settings.py``) hold these as their ``tier2`` section.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class Section(BaseModel):
    """A settings section: an unknown field is an error that names it, not a silently ignored typo."""

    model_config = ConfigDict(extra="forbid")


# Settings a production deployment must not leave to Ray Serve LLM's or vLLM's defaults.
REQUIRED_FIELDS = (
    ("model_loading_config", "model_id"),
    ("engine_kwargs", "max_model_len"),
    ("engine_kwargs", "enable_prefix_caching"),
    ("deployment_config", "max_ongoing_requests"),
    ("deployment_config", "max_queued_requests"),
    ("deployment_config", "autoscaling_config", "min_replicas"),
    ("deployment_config", "autoscaling_config", "max_replicas"),
    ("deployment_config", "autoscaling_config", "target_ongoing_requests"),
)


GPU_REQUIRED_FIELDS = (("engine_kwargs", "gpu_memory_utilization"),)


REMOTE_PREFIXES = ("s3://", "gs://", "abfss://", "azure://")


def _get(data: dict, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def check_llm_config(model: Tier2ModelSettings) -> None:
    """Raise ValueError naming the field when ``model.llm_config`` misses a required setting or is not a
    valid ``LLMConfig``."""
    required = REQUIRED_FIELDS + (GPU_REQUIRED_FIELDS if model.on_gpu else ())
    for path in required:
        if _get(model.llm_config, path) is None:
            raise ValueError(f"llm_config.{'.'.join(path)} must be set")
    if model.adapters and not model.adapters_path:
        raise ValueError("adapters need adapters_path (a folder or bucket URI with one sub-folder per adapter)")
    try:
        to_llm_config(model)
    except ValidationError as exc:
        problems = "; ".join(f"llm_config.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ValueError(problems) from None


def to_llm_config(model: Tier2ModelSettings):
    """The model's ``ray.serve.llm.LLMConfig``, with LoRA multiplexing switched on when it has adapters."""
    from ray.serve.llm import LLMConfig

    config = copy.deepcopy(model.llm_config)
    if model.adapters:
        remote = model.adapters_path.startswith(REMOTE_PREFIXES)
        lora = {"max_num_adapters_per_replica": len(model.adapters), **config.get("lora_config", {})}
        if remote:
            lora["dynamic_lora_loading_path"] = model.adapters_path
        config["lora_config"] = lora
        config["engine_kwargs"] = {"enable_lora": True, "max_loras": lora["max_num_adapters_per_replica"],
                                   **config["engine_kwargs"]}
    return LLMConfig(**config)


class LogprobCalibration(Section):
    """Platt scaling of an answer's mean token log-probability: P(good) = sigmoid(slope * mean + intercept),
    fitted (``models.calibration.fit_platt``) on answers graded against references."""

    slope: float
    intercept: float
    # What it was fitted on, so a reader of the config can judge it.
    fitted_on: str = ""


class AdapterSettings(Section):
    """A LoRA adapter over a tier-2 base model, served as ``<model>:<name>`` through Serve's multiplexing."""

    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    tasks: list[str] = []
    min_confidence: float | None = Field(None, ge=0, le=1)


class Tier2ModelSettings(Section):
    """One tier-2 model: Ray Serve LLM's ``LLMConfig`` as its docs write it, and what Tierwise adds."""

    # Passed to ``ray.serve.llm.LLMConfig``. Tierwise requires what a production deployment must not leave
    # to defaults: the context length, prefix caching, and explicit autoscaling and queue bounds.
    llm_config: dict
    # Router tasks this model is fit for (empty: any); the policy picks among fitting models by load.
    tasks: list[str] = []
    # A local folder or an s3:// / gs:// / azure:// URI with one sub-folder per adapter (PEFT layout).
    adapters_path: str | None = None
    adapters: list[AdapterSettings] = []
    # Escalate to tier 3 when the answer's calibrated confidence is below this (0: never on confidence).
    min_confidence: float = Field(0.0, ge=0, le=1)
    # Without a calibration the confidence is the geometric-mean token probability.
    calibration: LogprobCalibration | None = None
    # Output tokens a request may ask for (``max_tokens`` above it is a 400 naming it); default: the window.
    max_output_tokens: int | None = Field(None, ge=1)
    # The benchmark model whose quality head stands for this model's quality (the one closest to it in
    # published scores); default: router.quality.tier2_as.
    quality_as: str | None = None
    # ``module:Class`` of a Ray Serve LLM ``LLMEngine`` that the model's LLMServer runs instead of vLLM, e.g. the
    # replay's recorded answers (models.evaluation.replay.engine:RecordedEngine); None: vLLM.
    engine_cls: str | None = Field(None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")

    @property
    def name(self) -> str:
        """The model id clients and the gateway use."""
        return self.llm_config["model_loading_config"]["model_id"]

    @property
    def context_window(self) -> int:
        """Tokens the engine holds per sequence (vLLM's ``max_model_len``)."""
        return int(self.llm_config["engine_kwargs"]["max_model_len"])

    @property
    def output_limit(self) -> int:
        """The most output tokens one request may ask for."""
        return min(self.max_output_tokens or self.context_window, self.context_window)

    @property
    def on_gpu(self) -> bool:
        """Whether the model asks for GPUs (anything but ``accelerator_config: {kind: cpu}``)."""
        return (self.llm_config.get("accelerator_config") or {}).get("kind") != "cpu"

    @model_validator(mode="after")
    def _complete_llm_config(self) -> Tier2ModelSettings:
        check_llm_config(self)
        module = (self.engine_cls or "").partition(":")[0]
        try:
            found = not module or importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            raise ValueError(f"engine_cls: no module {module!r} to import")
        return self


class Tier2ModelsFile(Section):
    """The file ``tier2.models_file`` names: the tier-2 models, cheapest first."""

    models: list[Tier2ModelSettings] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> "Tier2ModelsFile":
        names = [m.name for m in self.models]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"model ids must be unique; repeated: {', '.join(duplicates)}")
        return self


class Tier2Settings(Section):
    """Self-hosted models on vLLM (Ray Serve LLM), and when tier 2 hands a request to tier 3."""

    # YAML file of :class:`Tier2ModelsFile`; None: tier 2 is not deployed and its traffic goes to tier 3.
    models_file: Path | None = None
    # A whole non-streamed answer, and the first streamed token, must arrive within these.
    timeout_s: float = Field(60.0, gt=0)
    first_token_timeout_s: float = Field(15.0, gt=0)
    # A stream's first tokens are held back until this many have arrived (or the stream ends, or
    # hold_max_ms passes), so a low-confidence start escalates before the client has seen anything.
    hold_tokens: int = Field(8, ge=0)
    hold_max_ms: int = Field(500, ge=0)
    # Tokens of output reserved in the window when a request sets no max_tokens.
    default_output_reserve: int = Field(256, ge=1)
    # Older turns that do not fit a model's window are summarised on tier 2 into at most this many tokens.
    summary_max_tokens: int = Field(200, ge=16)
    # `cluster`: a model whose minimum replicas the cluster's GPUs cannot hold when the app deploys is left
    # out (reported in /readyz; its traffic goes to tier 3). `autoscaler`: every model is deployed and waits
    # for the Ray autoscaler to add its GPU nodes, as on KubeRay, where GPU pods join after the app deploys
    # (`tierwise k8s render` checks that the GPU groups can hold them).
    placement: Literal["cluster", "autoscaler"] = "cluster"
    models: list[Tier2ModelSettings] = []

    @model_validator(mode="after")
    def _load_models(self) -> "Tier2Settings":
        if self.models_file is None or self.models:
            return self
        path = Path(self.models_file)
        if not path.is_file():
            raise ValueError(f"models_file: file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
            _resolve_model_paths(data, path.parent)
            self.models = Tier2ModelsFile.model_validate(data).models
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not valid YAML: {exc}") from exc
        except ValidationError as exc:
            raise ValueError(f"{path}: {describe_errors(exc)}") from None
        return self


def _resolve_model_paths(data: dict, base: Path) -> None:
    """Local model and adapter paths written ``./...`` or ``../...`` are relative to the models file (a bare
    ``org/name`` would be a hub id, which Tierwise never loads)."""
    for model in data.get("models") or []:
        if not isinstance(model, dict):
            continue
        loading = (model.get("llm_config") or {}).get("model_loading_config") or {}
        for holder, key in ((loading, "model_source"), (model, "adapters_path")):
            value = holder.get(key)
            if isinstance(value, str) and value.startswith(("./", "../")):
                holder[key] = str((base / value).resolve())


def describe_errors(exc: ValidationError) -> str:
    """Each error of ``exc`` as ``field.path: message``."""
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors())
