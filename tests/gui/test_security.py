"""The served GUI reads and writes only inside the allowed folders (gui/security.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gui.security import ROOTS_ENV, allowed_roots, check_allowed, set_roots


@pytest.fixture
def roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    monkeypatch.setenv(ROOTS_ENV, "")  # restored after the test
    set_roots([allowed])
    return allowed


def test_inside_is_allowed_outside_is_refused_alike(roots: Path, tmp_path: Path) -> None:
    assert check_allowed(roots / "sub" / "r.nc") == (roots / "sub" / "r.nc").resolve()
    (tmp_path / "secret.nc").write_bytes(b"x")
    messages = []
    for outside in (tmp_path / "secret.nc", tmp_path / "missing.nc", roots / ".." / "secret.nc"):
        with pytest.raises(PermissionError) as info:
            check_allowed(outside, what="results file")
        messages.append(str(info.value).replace(str(outside), "PATH"))
    assert len(set(messages)) == 1  # the page cannot tell an existing file from a missing one
    assert "sigma gui --root" in messages[0]


def test_a_symlink_out_of_the_folder_is_refused(roots: Path, tmp_path: Path) -> None:
    (tmp_path / "secret.nc").write_bytes(b"x")
    (roots / "link.nc").symlink_to(tmp_path / "secret.nc")
    with pytest.raises(PermissionError):
        check_allowed(roots / "link.nc")


def test_unset_means_unrestricted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(ROOTS_ENV, raising=False)
    assert allowed_roots() is None
    assert check_allowed(tmp_path / "x.nc") == (tmp_path / "x.nc").resolve()


def test_url_results_outside_the_folder_give_an_error_page(
    roots: Path, tmp_path: Path, small_results_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import panel as pn

    import gui.app as app

    monkeypatch.setattr(app.sys, "argv", ["panel"])  # not `app.py --args ...`
    asked = {"results": [str(small_results_path).encode()]}  # ?results=PATH in the URL
    monkeypatch.setattr(type(pn.state), "curdoc", property(lambda self: object()))
    monkeypatch.setattr(type(pn.state), "session_args", property(lambda self: asked))
    with pytest.raises(PermissionError, match="outside the folders"):
        app.results_path()
    set_roots([small_results_path.parent])
    assert app.results_path() == str(small_results_path.resolve())


def test_exports_and_save_as_outside_the_folder_are_refused(
    roots: Path, tmp_path: Path, small_results
) -> None:
    from gui.views import SigmaApp

    app = SigmaApp(results=small_results)
    app.clusters.output_dir = str(tmp_path)  # outside `roots`
    assert app.clusters.export_phase_map() is None
    assert "outside the folders" in app.state.message
    app.clusters.output_dir = str(roots)
    app.clusters.output_name = "../escaped.nc"
    assert app.clusters.save() is None
    assert "outside the folders" in app.state.message
    assert not (tmp_path / "escaped.nc").exists()
    app.clusters.output_name = "edited.nc"
    assert app.clusters.save() == roots / "edited.nc"
    assert app.clusters.export_phase_map() == roots / "results_phase_map.png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["allowed"]


def test_sigma_gui_warns_off_loopback_and_passes_basic_auth(
    small_results_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sigma.commands import gui as cmd

    argv = [str(small_results_path), "--dry-run", "--no-show", "--address", "0.0.0.0"]
    assert cmd.main(argv) == 0
    captured = capsys.readouterr()
    assert "sigma gui: warning: serving on '0.0.0.0'" in captured.err
    assert "--basic-auth" in captured.err
    assert cmd.main([*argv, "--basic-auth", "s3cret"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert "--basic-auth s3cret --cookie-secret" in captured.out
    roots = cmd.roots_for([str(small_results_path), "--root", str(small_results_path.parent)])
    assert roots[0] == small_results_path.parent.resolve()
