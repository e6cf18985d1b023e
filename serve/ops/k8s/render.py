"""Tierwise on Kubernetes: the KubeRay ``RayService`` manifest, rendered from ``configs/``.

Three inputs make ``k8s/rayservice.yaml``: the cluster's settings (``configs/k8s.yaml``, typed and validated
as :class:`serve.ops.k8s.settings.K8sSettings`), the application's settings (``configs/tierwise.yaml``, loaded as the cluster's
replicas will load them) and the tier-2 models file (``configs/tier2-gpu.yaml``). :func:`render` checks that
the cluster can run the application as configured (every tier-2 model placeable at start, local weights
reachable, shutdown inside the pods' grace period), builds the Serve config and the manifest, and validates
the manifest against :class:`serve.ops.k8s.manifest.RayService`, a typed model of the KubeRay ``ray.io/v1`` fields it uses.
``tierwise k8s render`` writes it; ``--check`` reports drift between the committed file and ``configs/``.
"""

from __future__ import annotations

import contextlib
import difflib
import os
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

import yaml

from deployments.config import Tier2ModelSettings
from deployments.tier2 import placement_problem
from serve.ops.k8s.manifest import RayService
from serve.ops.k8s.settings import (
    APP_NAME,
    CPU_GROUP,
    DEFAULT_K8S_CONFIG,
    ContainerResources,
    GpuGroupSettings,
    K8sSettings,
    Toleration,
    WorkerGroupSettings,
    load_k8s_settings,
)
from serve.settings import REPO_ROOT, ConfigError, Settings, load_settings

DEFAULT_MANIFEST = REPO_ROOT / "k8s" / "rayservice.yaml"
IMPORT_PATH = "serve.app:app_builder"
# Ray's metrics export port on every Ray pod: KubeRay's default, set explicitly because the Prometheus scrape
# config and PodMonitor in k8s/prometheus/ rely on it (the container port is named "metrics").
METRICS_PORT = 8080
# Every Ray pod of this application carries it, so monitoring can tell them from other Ray clusters' pods.
PART_OF = {"app.kubernetes.io/part-of": "tierwise"}
# The Secret key holding Redis's password (k8s/secret.template.yaml).
REDIS_PASSWORD_KEY = "REDIS_PASSWORD"

# The metrics the Grafana dashboard (k8s/grafana/tierwise.json) may query, as Prometheus sees them: the
# gateway's own, exported through Ray's metrics API (``ray_`` prefix; Serve adds application, deployment and
# replica tags), and Serve's. tests/serve/ops/k8s checks every panel against this list.
DASHBOARD_METRICS = frozenset({
    "ray_tierwise_requests_total",               # endpoint, tier, model, task, status
    "ray_tierwise_request_seconds_bucket",       # endpoint, tier, model
    "ray_tierwise_request_seconds_sum",
    "ray_tierwise_request_seconds_count",
    "ray_tierwise_first_token_seconds_bucket",   # tier, model: a stream's time to first byte
    "ray_tierwise_router_seconds_bucket",        # the router's decision time
    "ray_tierwise_escalations_total",            # from_tier, to_tier, cause
    "ray_tierwise_tokens_total",                 # tier, model, kind (prompt | completion)
    "ray_tierwise_cost_usd_total",               # tier, model
    "ray_tierwise_baseline_cost_usd_total",      # tier
    "ray_tierwise_errors_total",                 # status, code
    "ray_tierwise_store_errors_total",           # store, operation
    "ray_serve_deployment_queued_queries",       # deployment
    "ray_serve_replica_processing_queries",      # deployment
    "ray_serve_num_ongoing_requests_at_replicas",
})


def repo_path(path: Path | str) -> str:
    """``path`` (absolute, or relative to the working directory) as a path relative to the repository, which
    the image holds; :class:`ConfigError` when it lies outside."""
    resolved = Path(path).resolve()
    try:
        return resolved.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        raise ConfigError(f"{path}: not inside the repository ({REPO_ROOT}); the image holds the repository, so "
                          f"the cluster can only read files from it") from None


# -- the application as the cluster runs it ---------------------------------------------------------------


def runtime_env_vars(k8s: K8sSettings) -> dict[str, str]:
    """The application's environment in the cluster (the Serve config's ``runtime_env``)."""
    env = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **k8s.app_env}
    if k8s.tier2_models:
        env["TIERWISE_TIER2__MODELS_FILE"] = f"{k8s.app_dir}/{k8s.tier2_models}"
    return dict(sorted(env.items()))


@contextlib.contextmanager
def _tierwise_environment(env: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with its ``TIERWISE_*`` variables replaced by ``env`` for the duration: what is rendered
    must not depend on the shell that renders it."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("TIERWISE_")}
    for name in saved:
        del os.environ[name]
    os.environ.update(env)
    try:
        yield
    finally:
        for name in env:
            os.environ.pop(name, None)
        os.environ.update(saved)


def load_cluster_settings(k8s: K8sSettings, k8s_path: Path | str = DEFAULT_K8S_CONFIG) -> Settings:
    """The application's settings as the cluster's replicas load them: ``k8s.config`` with ``k8s.app_env``
    and the tier-2 models file (here, from the checkout), and none of this shell's ``TIERWISE_*`` variables."""
    env = dict(k8s.app_env)
    if k8s.tier2_models:
        env["TIERWISE_TIER2__MODELS_FILE"] = str(REPO_ROOT / k8s.tier2_models)
    try:
        with _tierwise_environment(env):
            return load_settings(REPO_ROOT / k8s.config)
    except ConfigError as exc:
        raise ConfigError(f"{exc}; as the cluster loads it, with app_env and tier2_models of {k8s_path}") from exc


def gpu_models(settings: Settings) -> list[Tier2ModelSettings]:
    """The tier-2 models that ask for GPUs."""
    return [m for m in settings.tier2.models if m.on_gpu]


def minimum_resources(groups: list[GpuGroupSettings]) -> dict[str, float]:
    """The GPU resources Ray sees with every GPU group at its minimum size (as ``ray.cluster_resources()``
    names them)."""
    resources = {"GPU": float(sum(g.min_replicas * g.gpus for g in groups))}
    for group in groups:
        if group.accelerator_type and group.min_replicas:
            key = f"accelerator_type:{group.accelerator_type}"
            resources[key] = resources.get(key, 0) + group.min_replicas
    return resources


def _placement_problems(k8s: K8sSettings, settings: Settings) -> list[str]:
    """Tier-2 models the cluster could not place when the app deploys, or not on one pod.

    In the cluster the app deploys every tier-2 model and lets the autoscaler add its GPU pods
    (``tier2.placement: autoscaler``); the GPU groups at their minimum size must hold each model's minimum
    (``deployments.tier2.placement_problem``), so that tier 2 comes up without waiting for a scale-up."""
    problems = []
    at_minimum = minimum_resources(k8s.gpu_groups)
    for model in gpu_models(settings):
        kind = model.llm_config.get("accelerator_type")
        why = placement_problem(model, at_minimum)
        if why:
            fix = f"a group with accelerator_type {kind}" if kind else "a GPU group"
            problems.append(f"gpu_groups: tier-2 model {model.name} would be left out when the app deploys ({why}, "
                            f"with every GPU group at min_replicas): add {fix} or raise its min_replicas")
        engine = model.llm_config["engine_kwargs"]
        per_replica = int(engine.get("tensor_parallel_size", 1)) * int(engine.get("pipeline_parallel_size", 1))
        fitting = [g for g in k8s.gpu_groups if not kind or g.accelerator_type == kind]
        if fitting and max(g.gpus for g in fitting) < per_replica:
            problems.append(f"gpu_groups: tier-2 model {model.name} needs {per_replica} GPUs on one pod "
                            f"(tensor_parallel_size x pipeline_parallel_size), more than any group for it has (gpus)")
    return problems


def _local_paths(model: Tier2ModelSettings) -> list[str]:
    """The model's weights and adapters read from a local path: absolute once the settings are loaded (an
    object-storage URI or a hub id is not one)."""
    source = model.llm_config["model_loading_config"].get("model_source")
    candidates = [source if isinstance(source, str) else None, model.adapters_path]
    return [p for p in candidates if p and p.startswith("/")]


def _path_problems(k8s: K8sSettings, settings: Settings) -> list[str]:
    """Local model paths no pod can read: each must be in the image (the repository) or, for a GPU model, on
    the model volume."""
    problems = []
    for model in settings.tier2.models:
        for path in _local_paths(model):
            if Path(path).is_relative_to(REPO_ROOT):
                continue
            volume = k8s.model_volume if model.on_gpu else None
            if volume and PurePosixPath(path).is_relative_to(volume.mount_path):
                continue
            where = "in the image (the repository)" + (" nor under model_volume.mount_path" if model.on_gpu else "")
            problems.append(f"model_volume: tier-2 model {model.name} reads {path}, which is not {where}")
    return problems


def _shutdown_problems(k8s: K8sSettings, settings: Settings) -> list[str]:
    """A stopping replica's drain and graceful shutdown must end before Kubernetes kills its pod."""
    problems = []
    for field, capacity in (("http.capacity", settings.http.capacity), ("tier3.capacity", settings.tier3.capacity)):
        needed = settings.http.drain_s + capacity.graceful_shutdown_timeout_s
        if needed > k8s.termination_grace_period_s:
            problems.append(f"termination_grace_period_s: {k8s.termination_grace_period_s} s is shorter than "
                            f"http.drain_s + {field}.graceful_shutdown_timeout_s ({needed:g} s) of the app's settings")
    return problems


def check_cluster(k8s: K8sSettings, settings: Settings, k8s_path: Path | str = DEFAULT_K8S_CONFIG) -> None:
    """Raise :class:`ConfigError` (naming ``k8s_path`` and its fields) when the cluster cannot run the
    application as its settings and tier-2 models configure it."""
    problems = _placement_problems(k8s, settings) + _path_problems(k8s, settings) + _shutdown_problems(k8s, settings)
    if problems:
        models = f" (tier-2 models: {k8s.tier2_models})" if k8s.tier2_models else ""
        raise ConfigError(f"{k8s_path}{models}: " + "; ".join(problems))


# -- the manifest ---------------------------------------------------------------------------------------------


def serve_config(k8s: K8sSettings, settings: Settings) -> dict:
    """The Serve config (``serveConfigV2``): ``configs/serve-local.yaml``'s application, for the cluster."""
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": "0.0.0.0", "port": settings.http.port},
        "applications": [{
            "name": APP_NAME,
            "route_prefix": "/",
            "import_path": IMPORT_PATH,
            # Absolute: Serve does not promise the working directory its replicas start in.
            "args": {"config": f"{k8s.app_dir}/{k8s.config}"},
            "runtime_env": {"env_vars": runtime_env_vars(k8s)},
        }],
    }


def _pod_env(k8s: K8sSettings, settings: Settings) -> list[dict]:
    """Environment of every Ray container. Serve's controller and proxies read the RAY_SERVE_* variables when
    they start, outside the application's runtime_env; Ray's workers inherit all of it."""
    redis = k8s.redis
    return [
        {"name": "HF_HUB_OFFLINE", "value": "1"},
        {"name": "TOKENIZERS_PARALLELISM", "value": "false"},
        {"name": "RAY_SERVE_ENABLE_HA_PROXY", "value": "1"},
        {"name": "RAY_SERVE_THROUGHPUT_OPTIMIZED", "value": "1"},
        {"name": "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "value": f"{settings.http.drain_s:g}"},
        {"name": REDIS_PASSWORD_KEY, "valueFrom": {"secretKeyRef": {"name": k8s.secret, "key": REDIS_PASSWORD_KEY}}},
        # Kubernetes expands $(REDIS_PASSWORD) from the variable above: the password stays in the Secret.
        {"name": "TIERWISE_STORE__URL", "value": f"redis://:$({REDIS_PASSWORD_KEY})@{redis.address}/{redis.db}"},
    ]


def _container(name: str, k8s: K8sSettings, settings: Settings, resources: ContainerResources, ports: list[dict],
               gpus: int = 0, mounts: tuple[dict, ...] = ()) -> dict:
    """A Ray container: the image, its ports, environment (the Secret's keys included) and resources."""
    return {
        "name": name,
        "image": k8s.image,
        "imagePullPolicy": k8s.image_pull_policy,
        "ports": ports + [{"name": "serve", "containerPort": settings.http.port},
                          {"name": "metrics", "containerPort": METRICS_PORT}],
        "env": _pod_env(k8s, settings),
        "envFrom": [{"secretRef": {"name": k8s.secret}}],
        "resources": resources.requirements(gpus),
        # Ray's object store (and NCCL, for models split over GPUs) needs more shared memory than 64 MB.
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}, *mounts],
        "securityContext": {"allowPrivilegeEscalation": False},
    }


def _pod_template(component: str, container: dict, k8s: K8sSettings, node_selector: dict[str, str] | None = None,
                  tolerations: list[Toleration] | None = None, volumes: tuple[dict, ...] = ()) -> dict:
    """A Ray pod: one container, shared memory, the grace period, and where it may run. KubeRay adds the
    liveness and readiness probes (raylet health, and on workers Serve's proxy at /-/healthz)."""
    spec = {
        "terminationGracePeriodSeconds": k8s.termination_grace_period_s,
        "containers": [container],
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory"}}, *volumes],
    }
    if node_selector:
        spec["nodeSelector"] = dict(node_selector)
    if tolerations:
        spec["tolerations"] = [t.manifest() for t in tolerations]
    return {"metadata": {"labels": {**PART_OF, "app.kubernetes.io/component": component}}, "spec": spec}


def _worker_group(name: str, group: WorkerGroupSettings, template: dict,
                  resources: dict[str, str] | None = None) -> dict:
    """A worker group: its bounds (it starts at its minimum), Ray resources, and pod template."""
    spec = {"groupName": name, "replicas": group.min_replicas, "minReplicas": group.min_replicas,
            "maxReplicas": group.max_replicas}
    if group.idle_timeout_s is not None:
        spec["idleTimeoutSeconds"] = group.idle_timeout_s
    if resources:
        spec["resources"] = resources
    return spec | {"rayStartParams": {"metrics-export-port": str(METRICS_PORT)}, "template": template}


def _gpu_group(k8s: K8sSettings, settings: Settings, group: GpuGroupSettings) -> dict:
    """A GPU worker group: its GPUs as a Kubernetes limit and a Ray resource, the model volume, and its nodes."""
    volume = k8s.model_volume
    mounts = ({"name": "models", "mountPath": volume.mount_path, "readOnly": True},) if volume else ()
    volumes = ({"name": "models", "persistentVolumeClaim": {"claimName": volume.claim_name, "readOnly": True}},
               ) if volume else ()
    container = _container("ray-worker", k8s, settings, group.resources, [], group.gpus, mounts)
    template = _pod_template(f"ray-{group.name}", container, k8s, group.node_selector, group.tolerations, volumes)
    # The GPU type as a Ray resource of the group (Ray also detects it on the node): the autoscaler reads it
    # from here to know which group to grow for a model that names the type.
    resources = {"GPU": str(group.gpus)}
    if group.accelerator_type:
        resources[f"accelerator_type:{group.accelerator_type}"] = "1"
    return _worker_group(group.name, group, template, resources)


def ray_service(k8s: K8sSettings, settings: Settings) -> dict:
    """The ``RayService`` manifest, validated against :class:`RayService`."""
    head_ports = [{"name": "gcs-server", "containerPort": 6379}, {"name": "dashboard", "containerPort": 8265},
                  {"name": "client", "containerPort": 10001}]
    head = _pod_template("ray-head", _container("ray-head", k8s, settings, k8s.head.resources, head_ports), k8s)
    cpu = _pod_template(f"ray-{CPU_GROUP}", _container("ray-worker", k8s, settings, k8s.cpu_workers.resources, []), k8s,
                        k8s.cpu_workers.node_selector, k8s.cpu_workers.tolerations)
    groups = [_worker_group(CPU_GROUP, k8s.cpu_workers, cpu)]
    if gpu_models(settings):
        groups += [_gpu_group(k8s, settings, g) for g in k8s.gpu_groups]
    manifest = {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": k8s.name, "labels": {"app.kubernetes.io/name": APP_NAME, **PART_OF}},
        "spec": {
            # A change to the cluster's spec (image, resources...) starts a second cluster and moves traffic
            # when it is ready, so room for both is needed meanwhile; new replica bounds, groups added at the end
            # and a change to serveConfigV2 alone are applied in place.
            "upgradeStrategy": {"type": "NewCluster"},
            # The head runs no replicas and is the one pod whose loss restarts the cluster's control plane:
            # traffic goes to the workers' proxies only.
            "excludeHeadPodFromServeSvc": True,
            "serveConfigV2": to_yaml(serve_config(k8s, settings)),
            "rayClusterConfig": {
                "rayVersion": k8s.ray_version,
                "enableInTreeAutoscaling": True,
                "autoscalerOptions": {"upscalingMode": k8s.autoscaler.upscaling_mode,
                                      "idleTimeoutSeconds": k8s.autoscaler.idle_timeout_s,
                                      "resources": k8s.autoscaler.resources.requirements()},
                # The GCS keeps its tables in Redis, so a head pod that restarts finds the cluster, and Serve's
                # applications, as they were, while the workers keep serving.
                "gcsFaultToleranceOptions": {
                    "redisAddress": k8s.redis.address,
                    "redisPassword": {"valueFrom": {"secretKeyRef": {"name": k8s.secret, "key": REDIS_PASSWORD_KEY}}},
                },
                "headGroupSpec": {"rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0",
                                                     "metrics-export-port": str(METRICS_PORT)},
                                  "template": head},
                "workerGroupSpecs": groups,
            },
        },
    }
    return RayService.model_validate(manifest).manifest()


def render(k8s_path: Path | str = DEFAULT_K8S_CONFIG, config: Path | str | None = None,
           tier2_models: Path | str | None = None) -> str:
    """``k8s/rayservice.yaml`` as ``configs/`` make it: ``k8s_path``'s settings, with ``config`` and
    ``tier2_models`` (files in the repository) in place of its own when given. Raises :class:`ConfigError`
    naming the file and the field when a setting is invalid or the cluster could not run the application."""
    k8s = load_k8s_settings(k8s_path)
    overrides = {"config": repo_path(config) if config else None,
                 "tier2_models": repo_path(tier2_models) if tier2_models else None}
    k8s = k8s.model_copy(update={k: v for k, v in overrides.items() if v})
    settings = load_cluster_settings(k8s, k8s_path)
    check_cluster(k8s, settings, k8s_path)
    return _header(k8s, Path(k8s_path)) + to_yaml(ray_service(k8s, settings))


def _header(k8s: K8sSettings, k8s_path: Path) -> str:
    sources = [_shown(k8s_path), k8s.config] + ([k8s.tier2_models] if k8s.tier2_models else [])
    return f"""\
# Tierwise's RayService (KubeRay ray.io/v1): the gateway, router, tier 1 and the tier-3 forwarder on the "cpu"
# workers, the tier-2 vLLM models (and the router, when it takes a GPU) on the GPU groups, the head running
# no replicas. Ray's autoscaler sizes each group between its bounds as Serve adds and removes replicas.
# KubeRay adds the probes: raylet health, and on workers Serve's proxy (/-/healthz), so the Service
# {k8s.name}-serve-svc only sends traffic to pods whose proxy is up. Redis keeps the GCS (fault tolerance)
# and Tierwise's store; the Secret {k8s.secret} (k8s/secret.template.yaml) holds its password and the
# provider keys.
#
# Generated by `tierwise k8s render` from {", ".join(sources[:-1])} and {sources[-1]}:
# edit those and re-render. `tierwise k8s render --check` fails while this file is out of date.
# Deploying it: README.md, "Deploy on Kubernetes".
"""


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it is inside it."""
    resolved = path.resolve()
    return resolved.relative_to(REPO_ROOT).as_posix() if resolved.is_relative_to(REPO_ROOT) else str(path)


def drift(path: Path, rendered: str) -> str:
    """A unified diff from the manifest at ``path`` to ``rendered``; empty when they are the same."""
    committed = path.read_text() if path.is_file() else ""
    return "".join(difflib.unified_diff(committed.splitlines(keepends=True), rendered.splitlines(keepends=True),
                                        f"{_shown(path)} (committed)", f"{_shown(path)} (rendered from configs/)"))


class _ManifestDumper(yaml.SafeDumper):
    """kubectl's YAML style: block mappings, list items indented under their key, multi-line strings (the
    Serve config) as literal blocks."""

    def increase_indent(self, flow: bool = False, indentless: bool = False):
        return super().increase_indent(flow, False)


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|" if "\n" in data else None)


_ManifestDumper.add_representer(str, _represent_str)


def to_yaml(data: Any) -> str:
    """``data`` as YAML in kubectl's style, keys in their given order."""
    return yaml.dump(data, Dumper=_ManifestDumper, sort_keys=False, default_flow_style=False, width=120)


# -- a typed model of the KubeRay fields the manifest uses --------------------------------------------------


