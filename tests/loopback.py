"""A local OpenAI-compatible chat server for tests, on the loopback interface only.

server = ChatServer(respond)     # respond(body, headers) -> (status, bytes[, extra headers])
server.url                       # http://127.0.0.1:PORT/v1, for llm_base_url
server.connections               # TCP connections accepted so far
server.close()                   # or: with ChatServer(respond) as server: ...

``keep_alive=True`` serves HTTP/1.1 with persistent connections (as real servers do), so a test
can see whether the client reuses them, and ``idle_timeout`` closes one that is idle that long;
by default each response closes its connection.
"""

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def chat_payload(answer, prompt_tokens=10, completion_tokens=2):
    """The body of a successful chat completion whose message is ``answer``."""
    return json.dumps(
        {
            "choices": [{"message": {"role": "assistant", "content": answer}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
        }
    ).encode()


def refused_url():
    """An http://127.0.0.1 address on which nothing listens (connections are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


class ChatServer:
    """Serves POSTed chat requests through ``respond(body, headers)``, which returns the HTTP
    status and the response bytes (and optionally a dict of extra headers, e.g.
    ``Retry-After``); runs in a daemon thread until :meth:`close`."""

    def __init__(self, respond, keep_alive=False, idle_timeout=None):
        server = self
        self.connections = 0
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

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                code, data, *extra = respond(body, self.headers)
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (extra[0] if extra else {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
