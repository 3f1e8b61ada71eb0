"""`rlaif report --serve`: a run's report over HTTP on 127.0.0.1, regenerated when the run's files change.

    GET /  (or /report.html)   the report, regenerated first if an input changed since it was written
    GET /version               the inputs' signature, after regenerating if it changed: the page polls it and
                               reloads itself when it differs from the one it was built with

Nothing else of the directory is served. Binds to 127.0.0.1 only: the report shows model outputs and judge
details, not something to publish on a shared network. One lock serialises regeneration across request threads.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from rlaif.report.data import signature
from rlaif.report.page import write_report


class ReportServer(ThreadingHTTPServer):
    """Serves the report of `run_dir`; `serve_forever()` to run, `shutdown()` from another thread to stop."""

    daemon_threads = True

    def __init__(self, run_dir: Path, port: int) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.run_dir = run_dir
        self._lock = threading.Lock()
        self._written = signature(run_dir) if (run_dir / "report.html").exists() else None

    def fresh(self) -> str:
        """The signature of the inputs, regenerating report.html first when it was made from others."""
        with self._lock:
            now = signature(self.run_dir)
            if now != self._written:
                write_report(self.run_dir)
                self._written = now
            return now

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


class _Handler(BaseHTTPRequestHandler):
    server: ReportServer

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/version":
            self._reply(self.server.fresh().encode(), "text/plain; charset=utf-8")
        elif path in ("/", "/report.html"):
            self.server.fresh()
            self._reply((self.server.run_dir / "report.html").read_bytes(), "text/html; charset=utf-8")
        else:
            self.send_error(404, "only / and /version are served")

    def _reply(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: a page polling every 2 s would fill the terminal."""
