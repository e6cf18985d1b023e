"""The OpenAI-compatible HTTP surface, in the shape of vLLM's ``entrypoints/openai``: the routes, the protocol
models, and one serving module per surface."""
