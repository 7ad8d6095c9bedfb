"""A bounded HTTP load generator for `POST /v1/retrieve` (benchmarks).

It runs in its own process (`run_load_in_subprocess`), so the clients do not compete
with the server for the interpreter lock; that process imports only the standard library
(and `serving/__init__`, which sets an environment variable).
"""

import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from typing import Any


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def run_load(url: str, bodies: list[str], clients: int) -> dict[str, Any]:
    """Posts every body once from `clients` keep-alive connections; latency and rate."""
    address = urllib.parse.urlparse(url).netloc
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def client(mine: list[str]) -> None:
        connection = http.client.HTTPConnection(address, timeout=60)
        headers = {"Content-Type": "application/json"}
        for text in mine:
            # bytes, not str: http.client then sends headers and body in one segment,
            # which avoids Nagle's algorithm meeting the server's delayed ACK (40 ms).
            body = text.encode()
            start = time.perf_counter()
            try:
                connection.request("POST", "/v1/retrieve", body, headers)
                response = connection.getresponse()
                response.read()
                failed = response.status != 200
            except (OSError, http.client.HTTPException):
                connection = http.client.HTTPConnection(address, timeout=60)
                failed = True
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)
                errors[0] += failed
        connection.close()

    threads = [threading.Thread(target=client, args=(bodies[i::clients],)) for i in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    ms = [t * 1000 for t in latencies]
    return {
        "p50_ms": statistics.median(ms),
        "p99_ms": _percentile(ms, 99),
        "requests": len(ms),
        "errors": errors[0],
        "clients": clients,
        "requests_per_second": len(ms) / wall,
    }


def run_load_in_subprocess(url: str, bodies: list[str], clients: int) -> dict[str, Any]:
    """`run_load` in a fresh Python process (`python -m twotower.bench.load_client`).

    Raises:
      RuntimeError: the load process failed.
    """
    job = json.dumps({"url": url, "bodies": bodies, "clients": clients})
    done = subprocess.run(
        [sys.executable, "-m", "twotower.bench.load_client"],
        input=job,
        capture_output=True,
        text=True,
        timeout=3600,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )
    if done.returncode != 0:
        raise RuntimeError(f"load client failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout)


if __name__ == "__main__":
    request = json.load(sys.stdin)
    json.dump(run_load(request["url"], request["bodies"], request["clients"]), sys.stdout)
