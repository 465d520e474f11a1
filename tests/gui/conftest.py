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
    """Results of the demo scene, 48 x 64 pixels, its first 5 phases as clusters (known labels)."""
    from gui.demo import scene_results

    return scene_results((48, 64), n_phases=5, n_channels=1024, seed=1)


@pytest.fixture(scope="session")
def small_results_path(small_results, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``small_results`` written to NetCDF."""
    from gui.demo import write_results

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
    # `sigma demo --small` once per machine (few epochs and k fixed: the GUI, not the model, is
    # under test), kept next to the real test files and copied into this session's cache
    import shutil

    from gui.demo import demo_results_path

    sys.path.insert(0, str(ROOT / "tests"))
    from realdata import cache_dir

    built = demo_results_path(cache_dir() / "gui-demo-v1", extra_args=["--epochs", "3", "--k", "8"])
    shutil.copy(built, cache / built.name)
    for url in serve_app([], cache):
        yield url, cache


@pytest.fixture(scope="session")
def nonav_results_path(small_results, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Results without a navigation image: of the real JEOL .pts map when it can be fetched
    (``sigma run --bin 8``, few epochs), else ``small_results`` without ``nav_image``."""
    from gui.demo import write_results

    folder = tmp_path_factory.mktemp("nonav")
    try:
        sys.path.insert(0, str(ROOT / "tests"))
        from realdata import hyperspy_test_file

        pts = hyperspy_test_file("JEOL_files/Sample/00_View000/View000_0000006.pts")
    except BaseException:  # offline (pytest.skip raises a BaseException): the synthetic stand-in
        pts = None
    if pts is not None:
        out = pts.parent / "View000_0000006_sigma_gui-v1.nc"  # built once per machine
        if out.exists():
            return out
        proc = subprocess.run([sys.executable, "-c", "import sys; from sigma.cli import main; sys.exit(main())",
                               "run", str(pts), "--bin", "8", "--epochs", "3", "--k", "4", "--quiet",
                               "--out", str(out)], capture_output=True, text=True, check=False)  # fmt: skip
        if proc.returncode == 0 and out.exists():
            return out
    return write_results(small_results.drop_vars("nav_image"), folder / "no_nav_results.nc")


@pytest.fixture(scope="session")
def nonav_server(nonav_results_path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app served on ``nonav_results_path``."""
    cache = tmp_path_factory.mktemp("sigma_cache_nonav")
    yield from serve_app([str(nonav_results_path)], cache)
