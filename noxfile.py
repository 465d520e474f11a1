"""nox sessions for sigma. Every install goes through constraints-cpu.txt (CPU torch, no CUDA download).

Uses the venv backend, never uv: uv ignores the local CPU torch wheel and would fetch a CUDA build.
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["lint", "typecheck", "tests"]

CONSTRAINTS = ("-c", "constraints-cpu.txt")


def _install(session: nox.Session, *groups: str, extras: str = "all") -> None:
    session.install("-U", "pip")
    args = [*CONSTRAINTS, "-e", f".[{extras}]"]
    for group in groups:
        args += ["--group", group]
    session.install(*args)


@nox.session
def tests(session: nox.Session) -> None:
    """Run the default test suite (no slow, GPU or browser tests)."""
    _install(session, "test")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and format check."""
    session.install("ruff")
    session.run("ruff", "check", "sigma", "gui", "tests", "benchmarks")
    session.run("ruff", "format", "--check", "sigma", "gui", "tests", "benchmarks")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy on the library and the GUI."""
    _install(session, "typecheck")
    session.run("mypy", "sigma", "gui")


@nox.session(default=False)
def ui(session: nox.Session) -> None:
    """Real-browser tests in headless Debian chromium (apt-get install -y chromium first)."""
    _install(session, "test", "ui")
    session.run("pytest", "-m", "ui", *session.posargs)


@nox.session(default=False)
def gpu(session: nox.Session) -> None:
    """GPU tests (needs CUDA; install a CUDA torch yourself instead of the CPU constraint)."""
    session.install("-e", ".[all]", "--group", "test")
    session.run("pytest", "-m", "gpu", *session.posargs)


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Benchmark suite: speed and quality, JSON + Markdown under benchmarks/results/."""
    _install(session, "test")
    session.run("python", "benchmarks/run_all.py", *session.posargs)
