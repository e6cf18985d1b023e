"""The cluster's settings (``configs/k8s.yaml``): the image, the worker groups and their sizes, Redis, the
Secret and the autoscaler, typed and validated as the application's settings are."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from deployments.config import Section, describe_errors
from serve.settings import REPO_ROOT, ConfigError, read_yaml_mapping

DEFAULT_K8S_CONFIG = REPO_ROOT / "configs" / "k8s.yaml"


APP_NAME = "tierwise"


CPU_GROUP = "cpu"


# Set by the manifest itself (the store's URL carries the Secret's password; the models file follows
# tier2_models), so app_env may not set them.
RESERVED_APP_ENV = frozenset({"TIERWISE_CONFIG", "TIERWISE_STORE__URL", "TIERWISE_TIER2__MODELS_FILE"})


DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


# A Kubernetes quantity as these manifests write them: "500m", "2", "8Gi", "1.5".
Quantity = Annotated[str, Field(pattern=r"^([0-9]+(\.[0-9]+)?|\.[0-9]+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")]


DnsLabel = Annotated[str, Field(pattern=DNS_LABEL, max_length=63)]


AbsolutePath = Annotated[str, Field(pattern=r"^/([^/\s]+/?)*$")]


class ContainerResources(Section):
    """What one Ray container requests, and is limited to: Ray sizes its node from the limits, so a request
    below them would let Kubernetes pack pods onto CPUs and memory Ray believes it has alone."""

    cpu: Quantity
    memory: Quantity
    ephemeral_storage: Quantity | None = None

    def requirements(self, gpus: int = 0) -> dict:
        """The container's ``resources``: equal requests and limits, with ``gpus`` NVIDIA GPUs."""
        amounts = {"cpu": self.cpu, "memory": self.memory}
        if self.ephemeral_storage:
            amounts["ephemeral-storage"] = self.ephemeral_storage
        if gpus:
            amounts["nvidia.com/gpu"] = str(gpus)
        return {"requests": dict(amounts), "limits": dict(amounts)}


class Toleration(Section):
    """A Kubernetes toleration (GPU node pools are usually tainted so that only GPU pods land there)."""

    key: str = Field(min_length=1)
    operator: Literal["Exists", "Equal"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None

    @model_validator(mode="after")
    def _value_fits_operator(self) -> "Toleration":
        if (self.operator == "Equal") != (self.value is not None):
            raise ValueError("operator Equal takes a value, Exists none")
        return self

    def manifest(self) -> dict:
        """The toleration as a pod spec writes it."""
        return self.model_dump(exclude_none=True)


class HeadSettings(Section):
    """The head pod: GCS, dashboard, Serve controller and a proxy, and no replicas (``num-cpus: 0``)."""

    resources: ContainerResources


class WorkerGroupSettings(Section):
    """A worker group, scaled by the Ray autoscaler between its bounds."""

    min_replicas: int = Field(ge=0)
    max_replicas: int = Field(ge=1)
    # Seconds an idle pod of this group is kept (the autoscaler's idle timeout when None).
    idle_timeout_s: int | None = Field(None, ge=0)
    resources: ContainerResources
    node_selector: dict[str, str] = {}
    tolerations: list[Toleration] = []

    @model_validator(mode="after")
    def _bounds(self) -> "WorkerGroupSettings":
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) exceeds max_replicas ({self.max_replicas})")
        return self


GPU_TOLERATION = Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")


class GpuGroupSettings(WorkerGroupSettings):
    """A group of GPU pods of one type, for the tier-2 models that ask for it (and the GPU router)."""

    name: DnsLabel
    # Ray's name of the GPU type (``llm_config.accelerator_type``: L4, L40S, A100, H100...); the group
    # advertises it as the resource ``accelerator_type:<type>``, so that the autoscaler knows which group
    # to grow for a model. None: GPUs of any type, for models that name none.
    accelerator_type: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]+$")
    gpus: int = Field(1, ge=1)
    tolerations: list[Toleration] = [GPU_TOLERATION]


class RedisSettings(Section):
    """The Redis behind Ray's GCS fault tolerance and Tierwise's store (its password is in the Secret)."""

    host: str = Field(min_length=1, pattern=r"^[A-Za-z0-9.-]+$")
    port: int = Field(6379, ge=1, le=65535)
    db: int = Field(0, ge=0)

    @property
    def address(self) -> str:
        """``host:port``, as KubeRay's ``redisAddress`` takes it."""
        return f"{self.host}:{self.port}"


class ModelVolumeSettings(Section):
    """A claim holding model weights, mounted read-only on the GPU pods."""

    claim_name: DnsLabel
    mount_path: AbsolutePath


class AutoscalerSettings(Section):
    """The Ray autoscaler, a sidecar of the head pod."""

    upscaling_mode: Literal["Default", "Aggressive", "Conservative"] = "Default"
    idle_timeout_s: int = Field(60, ge=0)
    resources: ContainerResources


def _repo_relative(value: str) -> str:
    """``value`` checked to be a relative path that stays inside the repository."""
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise ValueError(f"{value!r} must be a path inside the repository, relative to its root (the image holds "
                         f"the repository at app_dir)")
    return str(path)


class K8sSettings(Section):
    """Everything ``configs/k8s.yaml`` holds: the image, the groups and their sizes, Redis, the Secret."""

    # KubeRay derives its RayCluster, pod and Service names (<name>-serve-svc) from it; kept short so that
    # they stay within Kubernetes' 63 characters.
    name: str = Field(APP_NAME, pattern=DNS_LABEL, max_length=40)
    ray_version: str = Field(pattern=r"^[0-9]+\.[0-9]+\.[0-9]+$")
    image: str = Field(min_length=1, pattern=r"^\S+$")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    app_dir: AbsolutePath = "/home/ray/tierwise"
    config: str = "configs/tierwise.yaml"
    tier2_models: str | None = None
    app_env: dict[str, str] = {}
    secret: DnsLabel = "tierwise-secrets"
    redis: RedisSettings
    termination_grace_period_s: int = Field(30, ge=0, le=30)
    head: HeadSettings
    cpu_workers: WorkerGroupSettings
    gpu_groups: list[GpuGroupSettings] = []
    model_volume: ModelVolumeSettings | None = None
    autoscaler: AutoscalerSettings

    @field_validator("config", "tier2_models")
    @classmethod
    def _in_repository(cls, value: str | None) -> str | None:
        return None if value is None else _repo_relative(value)

    @field_validator("app_env")
    @classmethod
    def _tierwise_variables(cls, env: dict[str, str]) -> dict[str, str]:
        for name in env:
            if not name.startswith("TIERWISE_"):
                raise ValueError(f"{name}: only TIERWISE_* settings overrides belong here")
            if name in RESERVED_APP_ENV:
                raise ValueError(f"{name} is set by the manifest itself (see configs/k8s.yaml)")
        return env

    @field_validator("gpu_groups")
    @classmethod
    def _unique_names(cls, groups: list[GpuGroupSettings]) -> list[GpuGroupSettings]:
        names = [g.name for g in groups]
        taken = sorted({n for n in names if names.count(n) > 1 or n == CPU_GROUP})
        if taken:
            raise ValueError(f"group names must be unique and not {CPU_GROUP!r}; repeated or taken: {', '.join(taken)}")
        return groups


def load_k8s_settings(path: Path | str = DEFAULT_K8S_CONFIG) -> K8sSettings:
    """Read and validate the cluster's settings; raise :class:`ConfigError` naming the file and the field."""
    path = Path(path)
    data = read_yaml_mapping(path, "settings")
    try:
        return K8sSettings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe_errors(exc)}") from None
