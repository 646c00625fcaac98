"""Build hook of pgflow-tools: writes ``pgflow/sql/`` into the wheel.

Everything else (metadata, dependencies, package data) is in pyproject.toml.
``pgflow/sql/`` is what ``make build`` copies into tools/pgflow/sql/: the
control file, every ``extension/sql/pgflow--*.sql`` and the install script of
the version in development, concatenated from ``extension/src/`` exactly as
extension/Makefile does.  tools/pgflow/db/_scripts.py does the work; it is
loaded by its path because the package's dependencies are not installed while
a wheel is built.  An sdist carries extension/ (MANIFEST.in), so a wheel
built from it has the same files.

An editable install writes nothing: there ``pgflow.db.install.find_scripts``
reads extension/ of the checkout itself.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.errors import FileError

ROOT = Path(__file__).resolve().parent
EXTENSION = ROOT / "extension"
SCRIPTS_MODULE = ROOT / "tools" / "pgflow" / "db" / "_scripts.py"


def load_scripts_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_pgflow_build_scripts", SCRIPTS_MODULE)
    if spec is None or spec.loader is None:
        raise FileError(f"cannot load {SCRIPTS_MODULE}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildPyWithSql(build_py):
    """``build_py``, then ``pgflow/sql/`` from extension/."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        files = self._sql_files()
        target = Path(self.build_lib) / "pgflow" / "sql"
        shutil.rmtree(target, ignore_errors=True)  # nothing left from an earlier build
        target.mkdir(parents=True)
        for name, data in files.items():
            (target / name).write_bytes(data)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = list(super().get_outputs(include_bytecode))
        if not getattr(self, "editable_mode", False):
            target = Path(self.build_lib) / "pgflow" / "sql"
            outputs += [str(target / name) for name in self._sql_files()]
        return outputs

    def _sql_files(self) -> dict[str, bytes]:
        if not (EXTENSION / "pgflow.control").is_file():
            raise FileError(
                f"{EXTENSION} is missing: build pgflow-tools from a checkout or from its sdist"
            )
        scripts = load_scripts_module()
        version = scripts.default_version(EXTENSION)
        package_version = self.distribution.get_version()
        if version != package_version:
            raise FileError(
                f"extension/pgflow.control has default_version {version} but pgflow.__version__ "
                f"is {package_version}: they move together (`make release` bumps both)"
            )
        files: dict[str, bytes] = scripts.package_files(EXTENSION)
        return files


setup(cmdclass={"build_py": BuildPyWithSql})
