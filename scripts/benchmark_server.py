"""Load test of the policy server: N requests from C concurrent clients; requests/s and latency percentiles.

    python scripts/benchmark_server.py --endpoint http://127.0.0.1:8777/act --requests 50 --clients 5
    python scripts/benchmark_server.py --checkpoint runs/quickstart/runs/tiny-quickstart   # starts its own server

Every request is a real HTTP POST of a json-numpy observation (two 256x256 images, 8-D state); a request counts as a
failure when it does not return a (chunk, action_dim) array.
"""

import argparse
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from experiments.robot.openvla_utils import get_action_from_server

ROOT = Path(__file__).resolve().parents[1]


def observation(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "full_image": rng.integers(0, 256, (256, 256, 3), dtype=np.uint8),
        "wrist_image": rng.integers(0, 256, (256, 256, 3), dtype=np.uint8),
        "state": rng.uniform(-0.2, 0.2, 8),
        "instruction": "pick up the alphabet soup and place it in the basket",
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(checkpoint: str, port: int, *extra: str, timeout: float = 180.0) -> subprocess.Popen:
    """`vla-scripts/deploy.py` on 127.0.0.1:port, returned once /health answers (or an error with its output)."""
    command = [sys.executable, str(ROOT / "vla-scripts" / "deploy.py"), "--pretrained_checkpoint", checkpoint,
               "--host", "127.0.0.1", "--port", str(port), "--log_level", "warning", *extra]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"deploy.py exited with {server.returncode}:\n{server.stdout.read()}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).read()
            return server
        except OSError:
            time.sleep(0.3)
    server.kill()
    raise TimeoutError(f"deploy.py did not answer /health within {timeout:.0f} s")


def load_test(endpoint: str, num_requests: int, clients: int, num_observations: int = 4) -> dict:
    observations = [observation(i) for i in range(num_observations)]

    def one(i: int):
        start = time.perf_counter()
        try:
            actions = get_action_from_server(observations[i % num_observations], endpoint)
            ok = actions.ndim == 2
        except Exception as err:  # noqa: BLE001 - counted and reported, the load test goes on
            actions, ok = repr(err), False
        return i, ok, (time.perf_counter() - start) * 1e3, actions

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, range(num_requests)))
    wall = time.perf_counter() - start
    latencies = sorted(r[2] for r in results)
    return {
        "requests": num_requests,
        "clients": clients,
        "failures": sum(not r[1] for r in results),
        "wall_s": wall,
        "requests_per_s": num_requests / wall,
        "p50_ms": statistics.median(latencies),
        "p95_ms": latencies[min(len(latencies) - 1, int(round(0.95 * (len(latencies) - 1))))],
        "results": results,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", help="a running server's /act URL")
    parser.add_argument("--checkpoint", help="start deploy.py on this checkpoint instead")
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--clients", type=int, default=5)
    args = parser.parse_args(argv)
    if bool(args.endpoint) == bool(args.checkpoint):
        parser.error("pass either --endpoint or --checkpoint")
    server = None
    if args.checkpoint:
        port = free_port()
        server = start_server(args.checkpoint, port)
        args.endpoint = f"http://127.0.0.1:{port}/act"
    try:
        get_action_from_server(observation(0), args.endpoint)  # warm-up
        report = load_test(args.endpoint, args.requests, args.clients)
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
    print(
        f"{report['requests']} requests from {report['clients']} clients: {report['failures']} failures, "
        f"{report['requests_per_s']:.1f} requests/s, latency p50 {report['p50_ms']:.0f} ms, "
        f"p95 {report['p95_ms']:.0f} ms ({report['wall_s']:.1f} s)"
    )
    return report


if __name__ == "__main__":
    main()
