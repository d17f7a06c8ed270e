"""A stand-in OpenTelemetry Collector for the bench: accepts OTLP/HTTP exports and drops them.

`python -m bench.otlp_sink PORT` answers every POST (e.g. `/v1/traces`) with 200 and an empty
body, as a collector does, and counts what it received (printed on SIGTERM). The API's exporter
then does all of its work (encoding, batching, the HTTP round trip) without a real collector.
"""

from __future__ import annotations

import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

received = {"requests": 0, "bytes": 0}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        received["requests"] += 1
        received["bytes"] += length
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)

    def stop(_signum: int, _frame: FrameType | None) -> None:
        print(f"otlp sink: {received['requests']} exports, {received['bytes']} bytes", flush=True)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    server.serve_forever()


if __name__ == "__main__":
    main()
