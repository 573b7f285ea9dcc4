"""The OpenAI-compatible client's throughput against a server of fixed latency, as ratios to
the ideal ``concurrency / latency``.

    python benchmarks/bench_llm_client.py [--latency 0.25] [--concurrency 1 4 16 64 256]
                                          [--rounds 5] [--batch_size 8]

A local OpenAI-compatible server (:mod:`recbole_llm.semantics.loopback`, keep-alive, one
thread per connection) runs in a process of its own, so that it does not share the client's
interpreter lock, and answers every request after ``--latency`` seconds, however many arrive
at once: an ideal GPU server. For each concurrency ``c`` (``llm_concurrency``) the client asks
``c * rounds`` distinct prompts, twice: through the backend alone (``OpenAIBackend.generate``)
and through the cached generator the semantic step uses (batches of ``--batch_size``, a fresh
reply cache, every batch written as it finishes). A ratio of 1.0 means the client kept ``c``
requests in flight the whole time; the server's peak of requests in flight is printed too.
"""

import argparse
import multiprocessing
import os
import shutil
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from recbole_llm.semantics.cache import ReplyCache  # noqa: E402
from recbole_llm.semantics.generator import CachedGenerator  # noqa: E402
from recbole_llm.semantics.loopback import ChatServer, fixed_latency  # noqa: E402
from recbole_llm.semantics.openai_backend import OpenAIBackend  # noqa: E402

DECODING = {"max_new_tokens": 16, "repetition_penalty": 1.0, "greedy": True}


def serve(latency, connection):
    """The server process: serve until told to stop; answer ``peak`` and ``reset``."""
    server = ChatServer(fixed_latency(latency), keep_alive=True)
    connection.send(server.url)
    while True:
        command = connection.recv()
        if command == "peak":
            connection.send((server.peak_in_flight, server.served))
        elif command == "reset":
            server.reset_counts()
            connection.send(None)
        else:
            server.close()
            return


def measure(ask, count, control):
    """``(requests per second, server's peak in flight)`` of ``ask()`` for ``count`` requests."""
    control.send("reset")
    control.recv()
    start = time.perf_counter()
    replies = ask()
    seconds = time.perf_counter() - start
    failed = [r.error for r in replies if r.error]
    if failed:
        raise SystemExit(f"{len(failed)} of {count} requests failed, e.g. {failed[0]}")
    control.send("peak")
    peak, served = control.recv()
    if served != count:
        raise SystemExit(f"the server answered {served} requests, not {count}")
    return count / seconds, peak


def one_run(through, concurrency, count, url, work, batch_size, control):
    """Ask ``count`` distinct prompts through the backend alone or the cached generator (with
    a fresh reply cache): ``(requests per second, server's peak in flight)``."""
    client = OpenAIBackend("bench", url, timeout=60.0, max_retries=0, concurrency=concurrency)
    requests = [
        [{"role": "user", "content": f"{through} {concurrency} prompt {i}"}] for i in range(count)
    ]
    if through == "backend":

        def ask():
            return client.generate(requests, DECODING)

    else:
        cache = ReplyCache(os.path.join(work, f"replies-{concurrency}.jsonl"))
        generator = CachedGenerator(lambda: client, "served:bench", cache, DECODING, progress=False)

        def ask():
            return generator.run(requests, batch_size)[0]

    try:
        return measure(ask, count, control)
    finally:
        client.cancel()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latency", type=float, default=0.25, help="seconds per request")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64, 256])
    parser.add_argument("--rounds", type=int, default=5, help="requests per window slot")
    parser.add_argument("--batch_size", type=int, default=8, help="llm_batch_size")
    args = parser.parse_args()

    control, child = multiprocessing.Pipe()
    server = multiprocessing.Process(target=serve, args=(args.latency, child), daemon=True)
    server.start()
    url = control.recv()
    work = tempfile.mkdtemp(prefix="bench-llm-client-")
    print(
        f"OpenAI-compatible client against a local server answering in {args.latency} s "
        f"(ideal throughput: concurrency / latency); {os.cpu_count()} CPUs, client and server "
        "in two processes"
    )
    print(
        f"{'concurrency':>11} {'requests':>8} {'ideal/s':>8} | {'backend/s':>9} {'ratio':>5} "
        f"{'peak':>4} | {'generator/s':>11} {'ratio':>5} {'peak':>4}"
    )
    try:
        for concurrency in args.concurrency:
            count = concurrency * args.rounds
            ideal = concurrency / args.latency
            measured = [
                one_run(through, concurrency, count, url, work, args.batch_size, control)
                for through in ("backend", "generator")
            ]
            (backend, backend_peak), (generator, generator_peak) = measured
            print(
                f"{concurrency:>11} {count:>8} {ideal:>8.1f} | {backend:>9.1f} "
                f"{backend / ideal:>5.2f} {backend_peak:>4} | {generator:>11.1f} "
                f"{generator / ideal:>5.2f} {generator_peak:>4}",
                flush=True,
            )
    finally:
        control.send("stop")
        server.join(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
