"""A typed model of the KubeRay ``ray.io/v1`` ``RayService`` fields the renderer writes: a misspelt or
deprecated field fails validation before the manifest is written."""

from __future__ import annotations

from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from serve.ops.k8s.settings import DNS_LABEL, DnsLabel, Quantity


class _Manifest(BaseModel):
    """KubeRay's camelCase fields, written snake_case here; an unknown (or misspelt) field is an error."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, validate_by_name=True, validate_by_alias=True)


class SecretKeySelector(_Manifest):
    name: DnsLabel
    key: str = Field(min_length=1)


class SecretValueFrom(_Manifest):
    secret_key_ref: SecretKeySelector


class RedisCredential(_Manifest):
    value_from: SecretValueFrom


class GcsFaultToleranceOptions(_Manifest):
    """GCS fault tolerance on an external Redis (KubeRay >= 1.3)."""

    redis_address: str = Field(pattern=r"^[A-Za-z0-9.-]+:[0-9]+$")
    redis_password: RedisCredential


class ResourceRequirements(_Manifest):
    requests: dict[str, Quantity]
    limits: dict[str, Quantity]


class AutoscalerOptions(_Manifest):
    upscaling_mode: Literal["Default", "Aggressive", "Conservative"]
    idle_timeout_seconds: int = Field(ge=0)
    resources: ResourceRequirements


class HeadGroupSpec(_Manifest):
    ray_start_params: dict[str, str]
    # A core/v1 PodTemplateSpec; the tests validate it against Kubernetes' own schema.
    template: dict[str, Any]


class WorkerGroupSpec(_Manifest):
    group_name: DnsLabel
    replicas: int = Field(ge=0)
    min_replicas: int = Field(ge=0)
    max_replicas: int = Field(ge=1)
    idle_timeout_seconds: int | None = Field(None, ge=0)
    # Ray resources of each pod of the group (KubeRay >= 1.5), read by the autoscaler.
    resources: dict[str, Quantity] | None = None
    ray_start_params: dict[str, str]
    template: dict[str, Any]

    @model_validator(mode="after")
    def _bounds(self) -> "WorkerGroupSpec":
        if not self.min_replicas <= self.replicas <= self.max_replicas:
            raise ValueError(f"group {self.group_name}: replicas {self.replicas} must lie within minReplicas "
                             f"{self.min_replicas} and maxReplicas {self.max_replicas}")
        return self


class RayClusterConfig(_Manifest):
    ray_version: str = Field(pattern=r"^[0-9]+\.[0-9]+\.[0-9]+$")
    enable_in_tree_autoscaling: bool
    autoscaler_options: AutoscalerOptions
    gcs_fault_tolerance_options: GcsFaultToleranceOptions
    head_group_spec: HeadGroupSpec
    worker_group_specs: list[WorkerGroupSpec] = Field(min_length=1)

    @field_validator("worker_group_specs")
    @classmethod
    def _unique_groups(cls, groups: list[WorkerGroupSpec]) -> list[WorkerGroupSpec]:
        names = [g.group_name for g in groups]
        if len(set(names)) != len(names):
            raise ValueError(f"groupName must be unique: {', '.join(names)}")
        return groups


class UpgradeStrategy(_Manifest):
    type: Literal["NewCluster", "NewClusterWithIncrementalUpgrade", "None"]


class RayServiceSpec(_Manifest):
    """The RayService's spec. ``serviceUnhealthySecondThreshold`` and ``deploymentUnhealthySecondThreshold``
    are deprecated and unused since KubeRay 1.1 (worker readiness probes on Serve's proxy replaced them), so
    this model refuses them like any other unknown field."""

    upgrade_strategy: UpgradeStrategy
    exclude_head_pod_from_serve_svc: bool
    serve_config_v2: str
    ray_cluster_config: RayClusterConfig

    @field_validator("serve_config_v2")
    @classmethod
    def _valid_serve_config(cls, text: str) -> str:
        from ray.serve.schema import ServeDeploySchema

        try:
            ServeDeploySchema.model_validate(yaml.safe_load(text))
        except (yaml.YAMLError, ValidationError) as exc:
            raise ValueError(f"not a valid Serve config: {exc}") from None
        return text


class ObjectMeta(_Manifest):
    name: str = Field(pattern=DNS_LABEL, max_length=40)
    labels: dict[str, str] = {}


class RayService(_Manifest):
    """The fields of KubeRay's ``ray.io/v1`` RayService that Tierwise's manifest uses."""

    api_version: Literal["ray.io/v1"]
    kind: Literal["RayService"]
    metadata: ObjectMeta
    spec: RayServiceSpec

    def manifest(self) -> dict:
        """The manifest as Kubernetes reads it (camelCase, unset fields left out)."""
        return self.model_dump(by_alias=True, exclude_none=True)
