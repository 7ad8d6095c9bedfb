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
import tempfile
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


def run_soak(
    url: str, bodies: list[str], clients: int, stop_file: str, max_seconds: float
) -> dict[str, Any]:
    """Posts `bodies` round robin from `clients` keep-alive connections until `stop_file`
    exists (or `max_seconds` pass); counts answers per status code and connection
    failures ("errors")."""
    address = urllib.parse.urlparse(url).netloc
    statuses: dict[str, int] = {}
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    start = time.monotonic()
    deadline = start + max_seconds

    def client(offset: int) -> None:
        connection = http.client.HTTPConnection(address, timeout=60)
        headers = {"Content-Type": "application/json"}
        i = offset
        while time.monotonic() < deadline and not os.path.exists(stop_file):
            body = bodies[i % len(bodies)].encode()
            i += clients
            start = time.perf_counter()
            try:
                connection.request("POST", "/v1/retrieve", body, headers)
                response = connection.getresponse()
                response.read()
                status = str(response.status)
            except (OSError, http.client.HTTPException):
                connection = http.client.HTTPConnection(address, timeout=60)
                status = "connection_error"
            with lock:
                latencies.append(time.perf_counter() - start)
                statuses[status] = statuses.get(status, 0) + 1
                errors[0] += status == "connection_error" or status.startswith("5")
        connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.monotonic() - start
    ms = [t * 1000 for t in latencies]
    return {
        "seconds": round(seconds, 1),
        "requests": len(ms),
        "statuses": dict(sorted(statuses.items())),
        "errors": errors[0],
        "p50_ms": statistics.median(ms) if ms else 0.0,
        "p99_ms": _percentile(ms, 99) if ms else 0.0,
        "requests_per_second": len(ms) / seconds,
        "clients": clients,
    }


def _subprocess(job: dict[str, Any], wait: bool) -> Any:
    """Starts `python -m twotower.bench.load_client JOB_FILE` (the job in a temporary
    file: a pipe written before `communicate` cannot be handed to it)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(job, f)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    process = subprocess.Popen(
        [sys.executable, "-m", "twotower.bench.load_client", f.name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=root,
    )
    process.job_file = f.name  # removed by `collect`
    return collect(process) if wait else process


def collect(process: subprocess.Popen) -> dict[str, Any]:
    """The result of a load process started by `start_soak_in_subprocess`.

    Raises:
      RuntimeError: the load process failed.
    """
    try:
        out, err = process.communicate(timeout=3600)
    finally:
        os.unlink(process.job_file)
    if process.returncode != 0:
        raise RuntimeError(f"load client failed ({process.returncode}): {err[-2000:]}")
    return json.loads(out)


def run_load_in_subprocess(url: str, bodies: list[str], clients: int) -> dict[str, Any]:
    """`run_load` in a fresh Python process (`python -m twotower.bench.load_client`).

    Raises:
      RuntimeError: the load process failed.
    """
    return _subprocess({"url": url, "bodies": bodies, "clients": clients}, wait=True)


def start_soak_in_subprocess(
    url: str, bodies: list[str], clients: int, stop_file: str, max_seconds: float
) -> subprocess.Popen:
    """`run_soak` in a fresh Python process, started and left running: create
    `stop_file` to end it, then `collect` it."""
    job = {"url": url, "bodies": bodies, "clients": clients}
    job |= {"stop_file": stop_file, "max_seconds": max_seconds}
    return _subprocess(job, wait=False)


if __name__ == "__main__":
    with open(sys.argv[1]) as job_file:
        request = json.load(job_file)
    if "stop_file" in request:
        result = run_soak(
            request["url"],
            request["bodies"],
            request["clients"],
            request["stop_file"],
            request["max_seconds"],
        )
    else:
        result = run_load(request["url"], request["bodies"], request["clients"])
    json.dump(result, sys.stdout)
