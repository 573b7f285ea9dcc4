"""A local OpenAI-compatible chat server on the loopback interface: the stand-in LLM server of
the tests and benchmarks (standard library only; nothing imports it but them).

server = ChatServer(respond)     # respond(body, headers) -> (status, bytes[, extra headers])
server.url                       # http://127.0.0.1:PORT/v1, for llm_base_url
server.connections               # TCP connections accepted so far
server.peak_in_flight            # most requests it was answering at once
server.close()                   # or: with ChatServer(respond) as server: ...

``keep_alive=True`` serves HTTP/1.1 with persistent connections (as real servers do), so a test
can see whether the client reuses them, and ``idle_timeout`` closes one that is idle that long;
by default each response closes its connection. Each connection has a thread of its own, and
the listen queue holds :data:`LISTEN_QUEUE` connections, so hundreds of clients at once are
served without a refused or delayed connect.
"""

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

#: Connections waiting to be accepted (http.server's default, 5, drops a burst of connects).
LISTEN_QUEUE = 1024


def chat_payload(answer, prompt_tokens=10, completion_tokens=2):
    """The body of a successful chat completion whose message is ``answer``."""
    return json.dumps(
        {
            "choices": [{"message": {"role": "assistant", "content": answer}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
        }
    ).encode()


def fixed_latency(seconds, answer="ok"):
    """A ``respond`` that answers every request with ``answer`` after ``seconds``: a server
    whose every request takes the same time, whatever the load (an ideal GPU server)."""

    def respond(body, headers):
        time.sleep(seconds)
        return 200, chat_payload(answer)

    return respond


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = LISTEN_QUEUE


class ChatServer:
    """Serves POSTed chat requests through ``respond(body, headers)``, which returns the HTTP
    status and the response bytes (and optionally a dict of extra headers, e.g.
    ``Retry-After``); runs in a daemon thread until :meth:`close`. Counts the requests it is
    answering at once (``in_flight``, and its maximum ``peak_in_flight``) and ``served``."""

    def __init__(self, respond, keep_alive=False, idle_timeout=None):
        server = self
        self.connections = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        self.served = 0
        self._count_lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"
            timeout = idle_timeout

            def log_message(self, *args):
                pass

            def setup(self):
                with server._count_lock:
                    server.connections += 1
                super().setup()
                # headers and body go out in two writes: without this, Nagle's algorithm holds
                # the body until the client's delayed ACK (40 ms on Linux), as real servers avoid
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._count_lock:
                    server.in_flight += 1
                    server.peak_in_flight = max(server.peak_in_flight, server.in_flight)
                try:
                    code, data, *extra = respond(body, self.headers)
                finally:
                    with server._count_lock:
                        server.in_flight -= 1
                        server.served += 1
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (extra[0] if extra else {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def reset_counts(self):
        """Start counting ``peak_in_flight`` and ``served`` afresh."""
        with self._count_lock:
            self.peak_in_flight, self.served = self.in_flight, 0

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
