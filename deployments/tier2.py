"""Tier 2: self-hosted models on vLLM, served by Ray Serve LLM in the same application as the gateway.

Each configured model becomes one ``LLMServer`` deployment built from its ``LLMConfig``
(:func:`build_tier2`), autoscaled by Serve. A model the cluster cannot place (it asks for GPUs the
cluster does not have) is left out and reported (:func:`placement_problem`), so its traffic goes where
the policy sends it. The gateway reaches the deployments through handles
(:class:`serve.tiers.tier2_client.Tier2Pool`).
"""

from __future__ import annotations

import functools
import importlib
import os

from deployments.config import REMOTE_PREFIXES, Tier2ModelSettings, Tier2Settings, to_llm_config


def placement_problem(model: Tier2ModelSettings, resources: dict[str, float]) -> str | None:
    """Why the cluster (its total ``resources``, as ``ray.cluster_resources()`` gives them) cannot place
    the model's minimum replicas, or None when it can."""
    if not model.on_gpu:
        return None
    engine = model.llm_config["engine_kwargs"]
    per_replica = int(engine.get("tensor_parallel_size", 1)) * int(engine.get("pipeline_parallel_size", 1))
    replicas = max(1, int(model.llm_config["deployment_config"]["autoscaling_config"]["min_replicas"]))
    kind = model.llm_config.get("accelerator_type")
    # Ray marks each node's GPU type as a resource (``accelerator_type:L4``); without it, no GPU fits.
    have = resources.get("GPU", 0) if not kind or resources.get(f"accelerator_type:{kind}") else 0
    if have >= per_replica * replicas:
        return None
    what = f"{per_replica} GPU{'s' if per_replica > 1 else ''}" + (f" of type {kind}" if kind else "")
    return (f"needs {what} per replica ({replicas} replica{'s' if replicas > 1 else ''} at least); the cluster has "
            f"{int(have)}")


class LocalLoraLoader:
    """Resolves adapters from a local folder (one sub-folder per adapter) for Serve's multiplexing.

    Ray Serve LLM's own loader downloads from object storage only; with a local ``adapters_path`` this one
    is injected instead (``LLMServer``'s ``model_downloader``), so a single machine serves adapters too.
    """

    def __init__(self, root: str, download_timeout_s: float | None = None, max_tries: int = 1):
        self.root = root

    async def load_model_from_config(self, lora_model_id: str, llm_config):
        """The adapter's folder as Serve's multiplex config; a missing adapter is a clear error."""
        from ray.llm._internal.common.models import global_id_manager
        from ray.llm._internal.common.utils.lora_utils import get_lora_id
        from ray.llm._internal.serve.core.configs.llm_config import DiskMultiplexConfig

        path = os.path.join(self.root, get_lora_id(lora_model_id))
        if not os.path.isfile(os.path.join(path, "adapter_config.json")):
            raise ValueError(f"adapter {lora_model_id!r}: no adapter_config.json in {path}")
        return DiskMultiplexConfig(model_id=lora_model_id, max_total_tokens=None, local_path=path,
                                   lora_assigned_int_id=global_id_manager.next())


def _server_class():
    """Ray Serve LLM's ``LLMServer`` with the engine's tokenizer service wired up.

    Ray 2.60 looks the service up under vLLM's old state attribute (``openai_serving_tokenization``);
    vLLM 0.32 names it ``serving_tokenization``, so the stock server answers every tokenize call with "not
    supported". The gateway counts prompt tokens with the model's own tokenizer through that call.
    """
    from ray.serve.llm import LLMServer

    class Tier2Server(LLMServer):
        async def start(self):
            await super().start()
            engine = self.engine
            if getattr(engine, "_oai_serving_tokenization", None) is None:
                engine._oai_serving_tokenization = getattr(getattr(engine, "_app_state", None),
                                                           "serving_tokenization", None)

    return Tier2Server


def deployment_name(model: Tier2ModelSettings) -> str:
    """The Serve deployment of a model (unique in the application, readable in ``serve status``)."""
    return "Tier2:" + model.name.replace("/", "--").replace(".", "_")


def plan_placement(settings: Tier2Settings, resources: dict[str, float]):
    """The models to deploy, and why each other model is left out: none is with ``tier2.placement:
    autoscaler`` (the autoscaler adds the nodes), else those the cluster's ``resources`` cannot hold now."""
    placed, unplaced = [], {}
    for model in settings.models:
        problem = placement_problem(model, resources) if settings.placement == "cluster" else None
        if problem:
            unplaced[model.name] = problem
        else:
            placed.append(model)
    return placed, unplaced


def build_tier2(settings: Tier2Settings, resources: dict[str, float]):
    """The tier-2 deployments the cluster can place, by model id, and why each other model is left out."""
    from ray.serve.llm import build_llm_deployment

    placed, unplaced = plan_placement(settings, resources)
    apps = {}
    for model in placed:
        bind = {}
        if model.adapters and not model.adapters_path.startswith(REMOTE_PREFIXES):
            bind["model_downloader"] = functools.partial(LocalLoraLoader, os.path.abspath(model.adapters_path))
        if model.engine_cls:
            module, _, name = model.engine_cls.partition(":")
            bind["engine_cls"] = getattr(importlib.import_module(module), name)
        apps[model.name] = build_llm_deployment(to_llm_config(model), name_prefix="",
                                                override_serve_options={"name": deployment_name(model)},
                                                bind_kwargs=bind, deployment_cls=_server_class())
    return apps, unplaced
