"""Replaying public workloads through the whole gateway with recorded model answers.

The field's method for measuring routers (RouterBench, RouteLLM) is recorded outcomes: each benchmark prompt
with each model's answer and its correctness. Here those recordings become real engines: a tier-2 engine that
Ray Serve LLM's ``LLMServer`` runs in place of vLLM (:mod:`.engine`), and a local OpenAI-compatible server
for tier 3 (:mod:`.provider`), so that every other part of the gateway (deployments, handles, escalation,
accounting, the ledger) is the real one. A prompt with no recording is an error, never an invented answer.
"""
