"""Unit tests of tools/scripts/pg-matrix (the script behind `make test-matrix`).

The servers themselves are exercised by `make test-matrix`; these tests cover the
pieces that decide what runs: majors, cache layout, installed files, failure text.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import io
import json
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "tools" / "scripts" / "pg-matrix"


def _load() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("pg_matrix", str(SCRIPT))
    spec = importlib.util.spec_from_loader("pg_matrix", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["pg_matrix"] = module
    loader.exec_module(module)
    return module


pm = _load()


def test_pins_cover_14_to_18_each_with_its_major() -> None:
    assert sorted(pm.PINNED) == [14, 15, 16, 17, 18]
    for major, version in pm.PINNED.items():
        assert version.startswith(f"{major}.")


def test_parse_majors_takes_ranges_and_lists() -> None:
    assert pm.parse_majors("14-16,18") == [14, 15, 16, 18]
    assert pm.parse_majors("17") == [17]


def test_parse_majors_refuses_unpinned_majors() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=r"\[13\]"):
        pm.parse_majors("13-14")


def test_cache_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PGFLOW_PG_CACHE", str(tmp_path))
    assert pm.default_cache() == tmp_path


def test_hydrate_symlinks_recreates_relative_library_links(tmp_path: Path) -> None:
    native = tmp_path / "native"
    (native / "lib").mkdir(parents=True)
    (native / "lib" / "libpq.so.5.14").write_text("lib")
    links = [
        {"source": "native/lib/libpq.so.5.14", "target": "native/lib/libpq.so.5"},
        {"source": "native/lib/libpq.so.5.14", "target": "native/lib/libpq.so"},
    ]
    (native / "pg-symlinks.json").write_text(json.dumps(links))
    pm.hydrate_symlinks(native)
    pm.hydrate_symlinks(native)  # a second pass leaves existing links alone
    for name in ("libpq.so.5", "libpq.so"):
        link = native / "lib" / name
        assert link.is_symlink()
        assert str(link.readlink()) == "libpq.so.5.14"
        assert link.read_text() == "lib"


@pytest.mark.parametrize("layout", ["share/postgresql", "share", "usr/share/postgresql/18"])
def test_sharedir_finds_the_extension_directory(tmp_path: Path, layout: str) -> None:
    ext = tmp_path / layout / "extension"
    ext.mkdir(parents=True)
    (ext / "plpgsql.control").write_text("")
    assert pm.sharedir(tmp_path) == tmp_path / layout


def test_sharedir_without_plpgsql_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(pm.MatrixError, match="no share/extension"):
        pm.sharedir(tmp_path)


def _fake_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, built: bool = True) -> Path:
    ext = tmp_path / "repo" / "extension"
    (ext / "build").mkdir(parents=True)
    (ext / "sql").mkdir()
    (ext / "pgflow.control").write_text("default_version = '0.2.0'\n")
    if built:
        (ext / "build" / "pgflow--0.2.0.sql").write_text("-- new")
    (ext / "sql" / "pgflow--0.1.0.sql").write_text("-- frozen")
    (ext / "sql" / "pgflow--0.1.0--0.2.0.sql").write_text("-- upgrade")
    monkeypatch.setattr(pm, "REPO", tmp_path / "repo")
    return ext


def test_build_extension_lists_control_built_and_shipped_scripts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_repo(tmp_path, monkeypatch)
    names = [p.name for p in pm.build_extension()]
    assert names == [
        "pgflow.control",
        "pgflow--0.2.0.sql",
        "pgflow--0.1.0--0.2.0.sql",
        "pgflow--0.1.0.sql",
    ]


def test_build_extension_wants_a_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_repo(tmp_path, monkeypatch, built=False)
    with pytest.raises(pm.MatrixError, match="make -C extension"):
        pm.build_extension()


def test_install_files_replaces_stale_scripts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_repo(tmp_path, monkeypatch)
    root = tmp_path / "pg"
    extdir = root / "share" / "postgresql" / "extension"
    extdir.mkdir(parents=True)
    (extdir / "plpgsql.control").write_text("")
    (extdir / "pgflow--0.0.9.sql").write_text("-- stale")
    (extdir / "pgtap--0.1.sql").write_text("-- stale")
    tapdir = tmp_path / "tap"
    tapdir.mkdir()
    (tapdir / "pgtap.control").write_text("")
    (tapdir / "pgtap--1.2.0.sql").write_text("")
    (tapdir / "pgtap.so").write_text("")  # not SQL: not copied

    pm.install_files(pm.Install(18, "18.0.0", root), pm.build_extension(), pm.pgtap_files(tapdir))

    assert sorted(p.name for p in extdir.iterdir()) == [
        "pgflow--0.1.0--0.2.0.sql",
        "pgflow--0.1.0.sql",
        "pgflow--0.2.0.sql",
        "pgflow.control",
        "pgtap--1.2.0.sql",
        "pgtap.control",
        "plpgsql.control",
    ]


def test_pgtap_files_need_a_control_file(tmp_path: Path) -> None:
    with pytest.raises(pm.MatrixError, match=r"postgresql-15-pgtap"):
        pm.pgtap_files(tmp_path)


def test_pgtap_tests_collects_directories_and_files(tmp_path: Path) -> None:
    (tmp_path / "b" / "x").mkdir(parents=True)
    (tmp_path / "b" / "x" / "two.test.sql").write_text("")
    (tmp_path / "b" / "one.test.sql").write_text("")
    (tmp_path / "b" / "helper.sql").write_text("")
    single = tmp_path / "single.test.sql"
    single.write_text("")
    found = pm.pgtap_tests([tmp_path / "b", single])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "b/one.test.sql",
        "b/x/two.test.sql",
        "single.test.sql",
    ]


def test_failing_tap_drops_passing_files_and_timing() -> None:
    output = (
        "tests/pgtap/a.test.sql .. ok\n"
        "tests/pgtap/b.test.sql .. \n"
        "not ok 2 - one is two\n"
        "# Failed test 2\n"
        "Files=2, Tests=9,  0 wallclock secs\n"
        "Result: FAIL\n"
    )
    assert pm.failing_tap(output) == (
        "tests/pgtap/b.test.sql .. \nnot ok 2 - one is two\n# Failed test 2\nResult: FAIL\n"
    )


def _tarball(path: Path, names: list[str]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = 2
            tar.addfile(info, io.BytesIO(b"ok"))
    return path


@pytest.mark.parametrize("has_data_filter", [True, False])
def test_unpack_extracts_a_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, has_data_filter: bool
) -> None:
    if not has_data_filter:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    tgz = _tarball(tmp_path / "p.tgz", ["package/native/bin/postgres"])
    pm.unpack(tgz, tmp_path / "out")
    assert (tmp_path / "out" / "package" / "native" / "bin" / "postgres").read_text() == "ok"


def test_unpack_refuses_members_outside_the_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    tgz = _tarball(tmp_path / "p.tgz", ["package/../../evil"])
    with pytest.raises(pm.MatrixError, match="refusing member"):
        pm.unpack(tgz, tmp_path / "out")
    assert not (tmp_path / "evil").exists()


def test_matrix_cluster_uses_the_cached_binaries_and_the_c_locale(tmp_path: Path) -> None:
    install = pm.Install(18, "18.0.0", tmp_path / "pg")
    cluster = pm.matrix_cluster(install, tmp_path / "work")
    assert cluster.bindir == tmp_path / "pg" / "bin"  # no pg_config in the npm packages
    assert cluster.locale == "C"
    assert dict(cluster.settings) == {
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "max_connections": "40",
    }
    # the logs stay in the work directory after the cluster stops
    assert cluster.directory == tmp_path / "work"
    assert cluster.logfile.parent == tmp_path / "work"
