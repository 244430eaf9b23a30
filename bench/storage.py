"""Moves one large object through the files API of a real `modelport server` and reports throughput and the
gateway's memory: the upload and the download stream, so the server's resident memory should stay flat
whatever the object's size.

    .venv/bin/python bench/storage.py --size-mib 1024

It starts the server on 127.0.0.1 (port 0) with the local store in a temporary directory, applies a `Storage`
manifest, uploads `--size-mib` MiB of pseudo-random bytes (generated on the fly, never held whole), downloads
them while hashing, checks the SHA-256, and samples the server process's RSS (from /proc) every 50 ms.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

TOKEN = "mp_bench-storage-admin-token-0123456789"
CHUNK = 1 << 20


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Sampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0.0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, rss_mib(self.pid))
            time.sleep(0.05)


def payload(size: int, digest: hashlib._Hash) -> Iterator[bytes]:
    block = os.urandom(CHUNK)
    sent = 0
    while sent < size:
        chunk = block[: min(CHUNK, size - sent)]
        block = block[1:] + block[:1]  # a different chunk each time, cheaply
        digest.update(chunk)
        sent += len(chunk)
        yield chunk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    args = parser.parse_args()
    size = args.size_mib * CHUNK
    with tempfile.TemporaryDirectory() as data_dir:
        env = {**os.environ, "MODELPORT_BOOTSTRAP_TOKEN": TOKEN}
        command = [sys.executable, "-m", "modelport", "server", "--port", "0", "--data-dir", data_dir]
        server = subprocess.Popen(
            command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env
        )
        try:
            assert server.stderr is not None
            url = ""
            for line in server.stderr:
                match = re.search(r"serving on (http://\S+)", line)
                if match:
                    url = match.group(1)
                    break
            threading.Thread(target=server.stderr.read, daemon=True).start()
            headers = {"Authorization": f"Bearer {TOKEN}"}
            with httpx.Client(base_url=url, headers=headers, timeout=600) as client:
                storage = {"apiVersion": "modelport/v1", "kind": "Storage", "metadata": {"name": "bench"}}
                client.post("/api/v1/apply", json={"documents": [storage]}).raise_for_status()
                idle = rss_mib(server.pid)
                sampler = Sampler(server.pid)
                sampler.start()
                sent = hashlib.sha256()
                started = time.perf_counter()
                response = client.put(
                    "/api/v1/storage/bench/objects/big.bin",
                    content=payload(size, sent),
                    headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
                )
                response.raise_for_status()
                upload = time.perf_counter() - started
                upload_peak = sampler.peak
                received = hashlib.sha256()
                started = time.perf_counter()
                with client.stream("GET", "/api/v1/storage/bench/objects/big.bin") as download:
                    download.raise_for_status()
                    for chunk in download.iter_bytes(CHUNK):
                        received.update(chunk)
                took = time.perf_counter() - started
                sampler.stop.set()
                sampler.join()
            assert received.hexdigest() == sent.hexdigest() == response.json()["sha256"]
            mib = size / CHUNK
            print(f"object: {mib:,.0f} MiB, SHA-256 checked end to end")
            print(f"upload:   {mib / upload:,.0f} MiB/s ({upload:.1f} s)")
            print(f"download: {mib / took:,.0f} MiB/s ({took:.1f} s)")
            print(
                f"server RSS: {idle:,.0f} MiB idle, peak {upload_peak:,.0f} MiB during the upload, "
                f"{sampler.peak:,.0f} MiB overall"
            )
        finally:
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    main()
