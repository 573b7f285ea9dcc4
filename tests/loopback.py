"""A local OpenAI-compatible chat server for tests, on the loopback interface only.

server = ChatServer(respond)     # respond(body, headers) -> (status, bytes)
server.url                       # http://127.0.0.1:PORT/v1, for llm_base_url
server.close()                   # or: with ChatServer(respond) as server: ...
"""

import json
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


class ChatServer:
    """Serves POSTed chat requests through ``respond(body, headers)``, which returns the HTTP
    status and the response bytes; runs in a daemon thread until :meth:`close`."""

    def __init__(self, respond):
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                code, data = respond(body, self.headers)
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
