"""Every Kubernetes object in k8s/ against Kubernetes' own schemas (kubernetes-validate, strict: unknown fields
fail), the RayService's pod templates as PodTemplates, and the manifests agreeing with configs/k8s.yaml."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest
import yaml

from serve.ops.k8s.render import PART_OF, REDIS_PASSWORD_KEY
from tests.serve.ops.k8s.support import K8S_DIR, KUBERNETES_VERSION, as_pod_template, load_documents, pod_templates

# Plain Kubernetes objects (the RayService is a custom resource: its pod templates are checked below).
MANIFESTS = ["redis.yaml", "secret.template.yaml"]


def _objects(name: str) -> list[dict]:
    return load_documents(K8S_DIR / name)


@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_validates(name):
    objects = _objects(name)
    assert objects
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_ray_pod_templates_validate(rayservice):
    templates = pod_templates(rayservice)
    assert {"head", "cpu"} < set(templates)
    for group, template in templates.items():
        kubernetes_validate.validate(as_pod_template(f"tierwise-{group}", template), KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("breakage", [
    lambda c: c.update(resource=c.pop("resources")),                                        # misspelt field
    lambda c: c["ports"].append({"name": "http", "containerPort": "8000"}),                 # a port as a string
    lambda c: c["env"].append({"name": "X", "valueFrom": {"secretRef": {"name": "s"}}}),     # envFrom's field
])
def test_kubernetes_validate_rejects_a_broken_pod_template(rayservice, breakage):
    template = copy.deepcopy(pod_templates(rayservice)["cpu"])
    breakage(template["spec"]["containers"][0])
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(as_pod_template("broken", template), KUBERNETES_VERSION, strict=True)


def test_kustomization_applies_the_deployable_manifests_only():
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    assert kustomization["resources"] == ["redis.yaml", "rayservice.yaml"]
    for name in kustomization["resources"]:
        assert (K8S_DIR / name).is_file()


def test_secret_template_holds_every_key_the_pods_read(k8s_settings, cluster_settings):
    (secret,) = _objects("secret.template.yaml")
    assert secret["metadata"]["name"] == k8s_settings.secret
    keys = set(secret["stringData"])
    assert REDIS_PASSWORD_KEY in keys
    assert {p.api_key_env for p in cluster_settings.tier3.providers} <= keys
    # Placeholders only: a template must never carry a real key.
    assert set(secret["stringData"].values()) == {"REPLACE_ME"}


def test_demo_redis_is_what_configs_point_at(k8s_settings):
    service, deployment = _objects("redis.yaml")
    assert (service["kind"], deployment["kind"]) == ("Service", "Deployment")
    assert service["metadata"]["name"] == k8s_settings.redis.host
    assert service["spec"]["ports"][0]["port"] == k8s_settings.redis.port
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    # Ray's GCS tables must never be evicted; the password is the Secret's.
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    assert args[args.index("--requirepass") + 1] == f"$({REDIS_PASSWORD_KEY})"
    env = {e["name"]: e for e in container["env"]}
    secret = {"name": k8s_settings.secret, "key": REDIS_PASSWORD_KEY}
    assert env[REDIS_PASSWORD_KEY]["valueFrom"]["secretKeyRef"] == secret
    assert deployment["metadata"]["labels"]["tierwise.dev/not-for-production"] == "true"


def test_every_container_has_requests_and_limits(rayservice):
    templates = [deployment["spec"]["template"] for deployment in _objects("redis.yaml")
                 if deployment["kind"] == "Deployment"] + list(pod_templates(rayservice).values())
    for template in templates:
        assert template["spec"]["terminationGracePeriodSeconds"] <= 30
        for container in template["spec"]["containers"]:
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), container["name"]
            assert {"cpu", "memory"} <= set(container["resources"]["limits"]), container["name"]
    autoscaler = rayservice["spec"]["rayClusterConfig"]["autoscalerOptions"]["resources"]
    assert {"cpu", "memory"} <= set(autoscaler["requests"]) and {"cpu", "memory"} <= set(autoscaler["limits"])


def test_ray_pods_carry_the_applications_label(rayservice):
    for template in pod_templates(rayservice).values():
        assert PART_OF.items() <= template["metadata"]["labels"].items()
