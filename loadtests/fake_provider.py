"""A local OpenAI-compatible server to stand in for the tier-3 provider in load tests: the tests' own
``tests/support/fake_openai.py``, run on its own.

    .venv/bin/python loadtests/fake_provider.py
    # prints http://127.0.0.1:PORT/v1, then serves until interrupted; point the gateway at it:
    TIERWISE_TIER3__PROVIDERS='[{"name": "fake", "base_url": "http://127.0.0.1:PORT/v1", "model": "gpt-4o",
      "api_key_env": "NO_KEY", "allow_no_key": true}]' make serve

It answers at once with "fake reply to: <the prompt> ...", streamed word by word when asked, so tier-3
latencies under it are the gateway's own work plus this server's, not a frontier model's, and its token
counts (hence ``cost_usd``) are those of an echo. It keeps every request body (a test control), so it is
for runs of minutes, not days. It runs in a process of its own so that a load generator
in the same process does not share the interpreter with it.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.fake_openai import FakeOpenAIServer  # noqa: E402


def main() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with FakeOpenAIServer() as server:
        print(server.base_url, flush=True)
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
