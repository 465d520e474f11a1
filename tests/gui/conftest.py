"""GUI test fixtures: a small results file on disk and a served app in a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

ARTIFACTS = ROOT / "test-artifacts" / "gui"


@pytest.fixture(scope="session")
def small_results():
    """A 48 x 64 pixel synthetic results dataset with 5 phases (known labels)."""
    from gui.demo_data import make_demo_results

    return make_demo_results((48, 64), n_phases=5, n_energy=128, seed=1)


@pytest.fixture(scope="session")
def small_results_path(small_results, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``small_results`` written to NetCDF."""
    from gui.demo_data import write_results

    return write_results(small_results, tmp_path_factory.mktemp("results") / "small_results.nc")


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait until the server listens, then fetch the page once (a slow first render is not retried)."""
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(
                f"panel serve exited with {proc.returncode}; see its log next to the results"
            )
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.3)
    else:
        raise TimeoutError(f"{url} did not listen within {timeout} s")
    with urllib.request.urlopen(url, timeout=max(timeout - (time.monotonic() - start), 30)) as resp:
        if resp.status != 200:
            raise RuntimeError(f"{url} answered HTTP {resp.status}")


def serve_app(args: list[str], cache_dir: Path, timeout: float = 180.0) -> Iterator[str]:
    """Run ``panel serve gui/app.py`` on a free port (the demo when ``args`` is empty); yield its URL."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "panel",
        "serve",
        str(ROOT / "gui" / "app.py"),
        "--port",
        str(port),
        "--address",
        "127.0.0.1",
        "--allow-websocket-origin",
        f"127.0.0.1:{port}",
        "--num-procs",
        "1",
        "--setup",
        str(ROOT / "gui" / "warm.py"),
    ]
    if args:
        cmd += ["--args", *args]
    env = {**os.environ, "SIGMA_CACHE_DIR": str(cache_dir)}
    env.pop("SIGMA_RESULTS", None)
    if args:
        env["SIGMA_RESULTS"] = args[0]
    log = (cache_dir / "panel_serve.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}/app"
    try:
        _wait_http(url, proc, timeout)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="session")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The app served with no path (the demo); yields (url, folder of the demo file and exports)."""
    cache = tmp_path_factory.mktemp("sigma_cache")
    from gui.demo_data import demo_results_path

    demo_results_path(cache)  # write it here, so the server's first page load is what is timed
    for url in serve_app([], cache):
        yield url, cache
