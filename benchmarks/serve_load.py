"""Load on the prediction server: concurrent clients posting one photo each, for a time or a number of requests;
prints throughput, latency percentiles and failed requests. Exits 1 if any request failed.

    python benchmarks/serve_load.py --seconds 30 --clients 8 --images PATH/face_mask/image -- \\
        --config configs/mask_strong.yaml --ckpt_path best

After ``--``: the options of ``python cli.py serve``; the script starts that server on a free port, waits for it and
stops it at the end. ``--url http://HOST:PORT`` loads a server that runs already instead.
"""

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere, as `python benchmarks/...`

from benchmarks.process_tuning import cpu_model  # noqa: E402

SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def multipart(files: list[tuple[str, bytes]], field: str = "files") -> tuple[bytes, str]:
    """A multipart/form-data body holding ``files`` (name, content) in ``field``, and its Content-Type."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
             f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n" for name, data in files]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def post(url: str, body: bytes | Iterable[bytes], content_type: str, timeout: float = 60) -> tuple[int, dict]:
    """POST ``body`` (bytes, or chunks sent chunked); (HTTP status, the JSON answer), errors included."""
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        body = error.read()
        try:
            return error.code, json.loads(body or b"{}")
        except ValueError:  # a plain-text error page (a proxy's 502): still this request's failure
            return error.code, {"detail": body[:200].decode(errors="replace")}


def post_images(url: str, files: list[tuple[str, bytes]]) -> tuple[int, dict]:
    return post(f"{url}/predict", *multipart(files))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_ctrl_c() -> None:
    """A child's Ctrl+C handling reset to the default (``preexec_fn``): a runner started in the background (``pytest &``)
    ignores SIGINT, and its children would inherit that and never see a Ctrl+C sent to them."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_server(serve_args: list[str], port: int, cwd: Path | None = None, log: Path | None = None) -> subprocess.Popen:
    """``python cli.py serve`` in a process group of its own (LitServe starts worker processes)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    output = open(log, "w") if log else subprocess.DEVNULL
    return subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "serve", *serve_args, "--port", str(port)], cwd=cwd,
                            env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=default_ctrl_c)  # stop_server's Ctrl+C works


def wait_until_healthy(url: str, server: subprocess.Popen | None, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server is not None and server.poll() is not None:
            raise RuntimeError(f"the server stopped (exit code {server.returncode}) before it answered {url}/health")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url}/health did not answer 200 within {timeout:.0f} s")


def stop_server(server: subprocess.Popen) -> int:
    """Ctrl+C as a terminal sends it, then whatever is left of the process group is killed."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(server.pid, signal.SIGKILL)  # worker processes that outlived the main one
    except ProcessLookupError:
        pass
    server.wait()
    return server.returncode


def load(url: str, photos: list[tuple[str, bytes]], clients: int, seconds: float | None, requests: int | None) -> dict:
    """``clients`` threads, each posting one random photo at a time until the time or the request count is spent."""
    latencies, failures, lock = [], [], threading.Lock()
    deadline = time.monotonic() + seconds if seconds else float("inf")
    budget = iter(range(requests)) if requests else None

    def client(seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < deadline:
            with lock:
                if budget is not None and next(budget, None) is None:
                    return
            start = time.perf_counter()
            try:
                status, answer = post_images(url, [rng.choice(photos)])
                ok = status == 200 and len(answer.get("predictions", [])) == 1
            except (OSError, ValueError) as error:  # no connection, or an answer that is not JSON
                status, ok = repr(error), False
            with lock:
                latencies.append(time.perf_counter() - start)
                if not ok:
                    failures.append(status)

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    ms = sorted(1000 * t for t in latencies)
    centile = (lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]) if ms else (lambda q: float("nan"))
    return {"requests": len(ms), "failed": len(failures), "failures": sorted(set(map(str, failures)))[:5],
            "seconds": elapsed, "per_second": len(ms) / elapsed, "p50_ms": centile(0.50), "p90_ms": centile(0.90),
            "p99_ms": centile(0.99), "mean_ms": statistics.fmean(ms) if ms else float("nan")}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ours, serve_args = (argv[: argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", required=True, help="a folder of photos (any depth) to post, one per request")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=None, help="how long to load the server")
    parser.add_argument("--requests", type=int, default=None, help="or: how many requests in all")
    parser.add_argument("--url", default=None, help="a server that runs already (no serve options then)")
    args = parser.parse_args(ours)
    if not (args.seconds or args.requests):
        parser.error("give --seconds or --requests")
    paths = sorted(p for p in Path(args.images).expanduser().rglob("*") if p.suffix.lower() in SUFFIXES)[:64]
    if not paths:
        parser.error(f"--images {args.images}: no photos there")
    photos = [(p.name, p.read_bytes()) for p in paths]
    server, url = None, args.url
    if url is None:
        port = free_port()
        server, url = start_server(serve_args, port), f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, server)
        post_images(url, photos[:1])  # the first forward pass, not counted
        result = load(url, photos, args.clients, args.seconds, args.requests)
    finally:
        if server is not None:
            stop_server(server)
    print(f"{result['requests']} requests from {args.clients} clients in {result['seconds']:.1f} s: "
          f"{result['per_second']:.1f} requests/s (one photo a request, drawn from {len(photos)}); latency "
          f"p50 {result['p50_ms']:.0f} ms, p90 {result['p90_ms']:.0f} ms, p99 {result['p99_ms']:.0f} ms; "
          f"{result['failed']} failed {result['failures'] if result['failed'] else ''}")
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores")
    return int(result["failed"] > 0)


if __name__ == "__main__":
    sys.exit(main())
