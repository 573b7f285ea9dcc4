"""The local OpenAI-compatible chat server of the tests, on the loopback interface only.

The server itself lives in :mod:`recbole_llm.semantics.loopback`, which the benchmarks use too
(they never import the tests); this module adds what only tests need.

server = ChatServer(respond)     # respond(body, headers) -> (status, bytes[, extra headers])
server.url                       # http://127.0.0.1:PORT/v1, for llm_base_url
server.connections               # TCP connections accepted so far
server.peak_in_flight            # most requests answered at once
server.close()                   # or: with ChatServer(respond) as server: ...
"""

import socket

from recbole_llm.semantics.loopback import ChatServer, chat_payload, fixed_latency

__all__ = ["ChatServer", "chat_payload", "fixed_latency", "refused_url"]


def refused_url():
    """An http://127.0.0.1 address on which nothing listens (connections are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
