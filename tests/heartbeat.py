"""A pytest plugin that says which test is running when one takes long.

pytest prints a test's dot only when it ends, so a suite with a few minute-long tests (the
benchmark runner's end-to-end runs) looks stuck. While a test runs longer than
``RECBOLE_LLM_TEST_HEARTBEAT`` seconds (default 30; 0, or ``-qq``, turns this off), a line names it and its
elapsed time, again every time that span passes.
"""

import os
import threading
import time


def terminal_fd(config):
    """The terminal's file descriptor while pytest captures a test's output: fd capture keeps
    a copy of the original stdout (``targetfd_save``); without fd capture, stdout is it."""
    capture = config.pluginmanager.getplugin("capturemanager")
    out = getattr(getattr(capture, "_global_capturing", None), "out", None)
    return getattr(out, "targetfd_save", 1)


class Heartbeat:
    def __init__(self, config, every):
        self.config, self.every = config, every
        self.current = None  # (nodeid, start, next notice)
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.watch, name="test-heartbeat", daemon=True)
        self.thread.start()

    def watch(self):
        while not self.done.wait(min(self.every, 5)):
            with self.lock:
                if self.current is None:
                    continue
                nodeid, start, notice = self.current
                elapsed = time.monotonic() - start
                if elapsed < notice:
                    continue
                self.current = (nodeid, start, notice + self.every)
                line = f"\n  ... {nodeid} still running ({elapsed:.0f} s)\n"
                os.write(terminal_fd(self.config), line.encode())

    def pytest_runtest_logstart(self, nodeid, location):
        with self.lock:
            self.current = (nodeid, time.monotonic(), self.every)

    def pytest_runtest_logfinish(self, nodeid, location):
        with self.lock:
            self.current = None

    def pytest_unconfigure(self, config):
        self.done.set()


def pytest_configure(config):
    every = float(os.environ.get("RECBOLE_LLM_TEST_HEARTBEAT", "30"))
    if every > 0 and config.option.verbose >= -1:
        config.pluginmanager.register(Heartbeat(config, every), "recbole-llm-heartbeat")
