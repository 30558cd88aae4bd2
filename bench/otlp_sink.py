"""An OTLP/HTTP endpoint that accepts every export and keeps nothing: what the benchmark
points ``OTEL_EXPORTER_OTLP_ENDPOINT`` at to measure warden with tracing on, without a
collector's own CPU in the figures (it runs in its own process, not measured).

    python -m bench.otlp_sink --port 4318 &
    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 python -m bench.measure --impl warden ...

It answers 200 with an empty body, which is an empty ``Export*ServiceResponse`` (all
accepted), and counts the requests and bytes it was sent (printed when it stops).
"""

from __future__ import annotations

import argparse
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_received = {"requests": 0, "bytes": 0}


class _Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(length)
        _received["requests"] += 1
        _received["bytes"] += length
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per export would be the loudest thing on the machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=4318, help="port on 127.0.0.1 (0: any)")
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), _Sink)
    print(f"otlp sink on http://127.0.0.1:{server.server_address[1]}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.serve_forever()
    finally:
        print(f"otlp sink: {_received['requests']} exports, {_received['bytes']} bytes",
              file=sys.stderr)


if __name__ == "__main__":
    main()
