"""The RayService manifest: rendered from configs/ (and committed as rendered), a valid Serve config inside a
valid KubeRay v1 RayService, a cluster that can run the application, and settings errors that name the field."""

from __future__ import annotations

import copy
import importlib
import os
import re

import pytest
import ray
import yaml
from pydantic import ValidationError
from ray.serve.schema import ServeDeploySchema
from typer.testing import CliRunner

from serve.cli import cli
from serve.ops.k8s.manifest import RayService
from serve.ops.k8s.render import (DEFAULT_MANIFEST, IMPORT_PATH, METRICS_PORT, check_cluster, drift, minimum_resources,
                                  render)
from serve.ops.k8s.settings import APP_NAME, CPU_GROUP, DEFAULT_K8S_CONFIG, load_k8s_settings
from serve.settings import REPO_ROOT, ConfigError
from tests.serve.ops.k8s.support import K8S_DIR, pod_templates


def _container(template: dict) -> dict:
    (container,) = template["spec"]["containers"]
    return container


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container["env"]}


# -- drift: the committed manifest is what configs/ render ------------------------------------------------


def test_committed_manifest_is_what_configs_render(rendered):
    diff = drift(DEFAULT_MANIFEST, rendered)
    assert not diff, f"k8s/rayservice.yaml is out of date with configs/: run `tierwise k8s render`\n{diff}"


def test_drift_shows_a_diff_when_the_manifest_differs(tmp_path, rendered):
    stale = tmp_path / "rayservice.yaml"
    stale.write_text(rendered.replace("maxReplicas: 8", "maxReplicas: 3"))
    diff = drift(stale, rendered)
    assert "-        maxReplicas: 3" in diff and "+        maxReplicas: 8" in diff


def test_check_command_passes_on_the_committed_manifest():
    result = CliRunner().invoke(cli, ["k8s", "render", "--check"])
    assert result.exit_code == 0, result.output
    assert "up to date" in result.output


def test_check_command_fails_with_a_diff_on_drift(tmp_path, rendered):
    stale = tmp_path / "rayservice.yaml"
    stale.write_text(rendered.replace("memory: 24Gi", "memory: 16Gi"))
    result = CliRunner().invoke(cli, ["k8s", "render", "--check", "--out", str(stale)])
    assert result.exit_code == 1
    assert "+                    memory: 24Gi" in result.stdout and "out of date" in result.output
    assert stale.read_text() != rendered  # --check writes nothing


def test_render_command_writes_the_manifest(tmp_path, rendered):
    out = tmp_path / "manifests" / "rayservice.yaml"
    result = CliRunner().invoke(cli, ["k8s", "render", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text() == rendered


def test_render_ignores_the_shells_tierwise_variables(monkeypatch, rendered):
    monkeypatch.setenv("TIERWISE_HTTP__PORT", "9999")
    monkeypatch.setenv("TIERWISE_TIER2__MODELS_FILE", "configs/tier2-cpu.yaml")
    assert render() == rendered
    assert os.environ["TIERWISE_HTTP__PORT"] == "9999"  # and leaves them as they were


# -- the manifest ---------------------------------------------------------------------------------------------


def test_manifest_validates_against_the_typed_model(rayservice):
    assert RayService.model_validate(rayservice).manifest() == rayservice


def _set(document: dict, path: str, value) -> dict:
    """A copy of ``document`` with ``value`` at the dotted ``path`` (list indices as numbers)."""
    broken = copy.deepcopy(document)
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    node = broken
    for part in parents:
        node = node[part]
    node[last] = value
    return broken


@pytest.mark.parametrize("path, value, complaint", [
    ("spec.rayClusterConfig.workerGroupSpecs.0.minReplica", 1, "minReplica"),          # misspelt
    ("spec.serviceUnhealthySecondThreshold", 900, "serviceUnhealthySecondThreshold"),  # deprecated, unused
    ("spec.rayClusterConfig.workerGroupSpecs.0.minReplicas", 20, "minReplicas"),
    ("spec.rayClusterConfig.gcsFaultToleranceOptions.redisAddress", "redis://tierwise-redis", "redisAddress"),
    ("spec.serveConfigV2", "applications:\n  - import_path: nodots\n", "import path"),
    ("apiVersion", "ray.io/v1alpha1", "apiVersion"),
])
def test_the_typed_model_rejects_a_broken_manifest(rayservice, path, value, complaint):
    with pytest.raises(ValidationError, match=re.escape(complaint)):
        RayService.model_validate(_set(rayservice, path, value))


def test_serve_config_is_valid_and_points_into_the_image(rayservice, k8s_settings):
    config = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    schema = ServeDeploySchema.model_validate(config)
    assert schema.proxy_location == "EveryNode" and schema.http_options.host == "0.0.0.0"
    (app,) = schema.applications
    assert (app.name, app.route_prefix, app.import_path) == (APP_NAME, "/", IMPORT_PATH)
    module, _, attr = app.import_path.partition(":")
    assert callable(getattr(importlib.import_module(module), attr))
    # Paths in the image are the repository's, under app_dir.
    env = app.runtime_env["env_vars"]
    for in_image in (app.args["config"], env["TIERWISE_TIER2__MODELS_FILE"]):
        assert in_image.startswith(k8s_settings.app_dir + "/")
        assert (REPO_ROOT / in_image.removeprefix(k8s_settings.app_dir + "/")).is_file()
    assert env["HF_HUB_OFFLINE"] == "1" and env["TOKENIZERS_PARALLELISM"] == "false"
    assert env["TIERWISE_STORE__BACKEND"] == "redis"
    assert "TIERWISE_STORE__URL" not in env  # the pods' environment carries it, with the Secret's password


def test_head_runs_no_replicas_and_the_cluster_autoscales(rayservice, k8s_settings):
    spec = rayservice["spec"]
    cluster = spec["rayClusterConfig"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert spec["excludeHeadPodFromServeSvc"] is True
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["rayVersion"] == ray.__version__ == k8s_settings.ray_version
    for group in cluster["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert group["rayStartParams"]["metrics-export-port"] == str(METRICS_PORT)


def test_gcs_fault_tolerance_uses_redis_and_the_secret(rayservice, k8s_settings):
    options = rayservice["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]
    assert options["redisAddress"] == f"{k8s_settings.redis.host}:{k8s_settings.redis.port}"
    secret = {"name": k8s_settings.secret, "key": "REDIS_PASSWORD"}
    assert options["redisPassword"]["valueFrom"]["secretKeyRef"] == secret


def test_gpu_groups_serve_every_gpu_model(rayservice, cluster_settings):
    groups = {g["groupName"]: g for g in rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    types = {}
    for name, group in groups.items():
        limits = _container(group["template"])["resources"]["limits"]
        if name == CPU_GROUP:
            assert "nvidia.com/gpu" not in limits
            continue
        assert limits["nvidia.com/gpu"] == group["resources"]["GPU"]
        assert group["template"]["spec"]["tolerations"] and group["template"]["spec"]["nodeSelector"]
        types |= {k.removeprefix("accelerator_type:"): group["minReplicas"] for k in group["resources"]
                  if k.startswith("accelerator_type:")}
    for model in cluster_settings.tier2.models:
        kind = model.llm_config.get("accelerator_type")
        assert types.get(kind, 0) >= 1 if kind else len(groups) > 1, model.name


def test_every_ray_container_is_sized_and_configured(rayservice, k8s_settings, cluster_settings):
    for group, template in pod_templates(rayservice).items():
        spec = template["spec"]
        assert spec["terminationGracePeriodSeconds"] <= 30, group
        container = _container(template)
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]) and resources["requests"] == resources["limits"], group
        env = _env(container)
        assert {e: env[e]["value"] for e in ("HF_HUB_OFFLINE", "TOKENIZERS_PARALLELISM", "RAY_SERVE_ENABLE_HA_PROXY",
                                             "RAY_SERVE_THROUGHPUT_OPTIMIZED")} == {
            "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "RAY_SERVE_ENABLE_HA_PROXY": "1",
            "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}, group
        # The store's URL takes Redis's password from the variable defined before it (Kubernetes' $(VAR)).
        names = [e["name"] for e in container["env"]]
        assert names.index("REDIS_PASSWORD") < names.index("TIERWISE_STORE__URL")
        assert env["TIERWISE_STORE__URL"]["value"] == (f"redis://:$(REDIS_PASSWORD)@{k8s_settings.redis.host}:"
                                                       f"{k8s_settings.redis.port}/{k8s_settings.redis.db}")
        assert container["envFrom"] == [{"secretRef": {"name": k8s_settings.secret}}]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["serve"] == cluster_settings.http.port and ports["metrics"] == METRICS_PORT
        assert container["image"] == k8s_settings.image


def test_dockerfile_builds_on_the_clusters_ray(k8s_settings):
    dockerfile = (K8S_DIR / "Dockerfile").read_text()
    assert f"ARG BASE_IMAGE=rayproject/ray:{k8s_settings.ray_version}-py311" in dockerfile
    assert f"WORKDIR {k8s_settings.app_dir}" in dockerfile


def test_render_with_tier2_on_cpu_has_no_gpu_groups():
    manifest = yaml.safe_load(render(tier2_models=REPO_ROOT / "configs" / "tier2-cpu.yaml"))
    groups = manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert [g["groupName"] for g in groups] == [CPU_GROUP]
    env = yaml.safe_load(manifest["spec"]["serveConfigV2"])["applications"][0]["runtime_env"]["env_vars"]
    assert env["TIERWISE_TIER2__MODELS_FILE"].endswith("/configs/tier2-cpu.yaml")


# -- settings and cluster checks ----------------------------------------------------------------------------


def _k8s_file(tmp_path, **changes) -> str:
    """configs/k8s.yaml with ``changes`` (dotted paths) applied, written to a temporary file."""
    data = yaml.safe_load(DEFAULT_K8S_CONFIG.read_text())
    for path, value in changes.items():
        data = _set(data, path.replace("__", "."), value)
    out = tmp_path / "k8s.yaml"
    out.write_text(yaml.safe_dump(data))
    return str(out)


@pytest.mark.parametrize("changes, field", [
    ({"cpu_workers__min_replicas": 9}, "cpu_workers: Value error, min_replicas (9) exceeds max_replicas (8)"),
    ({"termination_grace_period_s": 60}, "termination_grace_period_s"),
    ({"head__resources__memory": "8 GB"}, "head.resources.memory"),
    ({"gpu_groups__0__nodeselector": {}}, "gpu_groups.0.nodeselector"),
    ({"app_env": {"TIERWISE_STORE__URL": "redis://x"}}, "TIERWISE_STORE__URL is set by the manifest itself"),
    ({"tier2_models": "../elsewhere/models.yaml"}, "tier2_models"),
    ({"gpu_groups__1__name": "gpu-l4"}, "gpu_groups"),
    ({"gpu_groups__0__tolerations": [{"key": "nvidia.com/gpu", "value": "present"}]}, "gpu_groups.0.tolerations.0"),
])
def test_bad_settings_name_the_file_and_the_field(tmp_path, changes, field):
    path = _k8s_file(tmp_path, **changes)
    with pytest.raises(ConfigError, match=re.escape(field)) as raised:
        load_k8s_settings(path)
    assert str(raised.value).startswith(path)


def test_bad_app_env_names_the_application_field(tmp_path):
    path = _k8s_file(tmp_path, app_env={"TIERWISE_HTTP__PORT": "70000"})
    with pytest.raises(ConfigError, match=r"http\.port.*app_env and tier2_models of .*k8s\.yaml"):
        render(path)


def test_render_command_reports_settings_errors(tmp_path):
    result = CliRunner().invoke(cli, ["k8s", "render", "--check", "--k8s-config",
                                      _k8s_file(tmp_path, termination_grace_period_s=-1)])
    assert result.exit_code == 2
    assert "termination_grace_period_s" in result.output


def test_render_refuses_files_outside_the_repository(tmp_path):
    outside = tmp_path / "tierwise.yaml"
    outside.write_text("{}\n")
    with pytest.raises(ConfigError, match="not inside the repository"):
        render(config=outside)


def test_minimum_resources_count_gpus_and_types(k8s_settings):
    assert minimum_resources(k8s_settings.gpu_groups) == {"GPU": 2.0, "accelerator_type:L4": 1,
                                                          "accelerator_type:L40S": 1}


def _without_l40s(k8s):
    return k8s.model_copy(update={"gpu_groups": [g for g in k8s.gpu_groups if g.accelerator_type != "L40S"]})


def _at_zero(k8s):
    return k8s.model_copy(update={"gpu_groups": [g.model_copy(update={"min_replicas": 0}) for g in k8s.gpu_groups]})


@pytest.mark.parametrize("change, complaints", [
    (_without_l40s, ["qwen2.5-14b-instruct would be left out", "accelerator_type L40S"]),
    (_at_zero, ["qwen2.5-7b-instruct would be left out", "qwen2.5-14b-instruct would be left out"]),
    (lambda k8s: k8s.model_copy(update={"model_volume": None}),
     ["model_volume: tier-2 model llama-3.1-8b-instruct reads /models/Llama-3.1-8B-Instruct"]),
    (lambda k8s: k8s.model_copy(update={"termination_grace_period_s": 10}),
     ["termination_grace_period_s: 10 s is shorter than http.drain_s + http.capacity.graceful_shutdown_timeout_s"]),
])
def test_cluster_checks_refuse_a_cluster_that_cannot_run_the_app(k8s_settings, cluster_settings, change, complaints):
    with pytest.raises(ConfigError) as raised:
        check_cluster(change(k8s_settings), cluster_settings)
    for complaint in complaints:
        assert complaint in str(raised.value)
    assert str(raised.value).startswith(str(DEFAULT_K8S_CONFIG))


def test_the_shipped_cluster_passes_its_checks(k8s_settings, cluster_settings):
    check_cluster(k8s_settings, cluster_settings)
