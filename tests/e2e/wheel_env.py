"""Build the sdist and wheel, and a fresh virtual environment holding the wheel and only what it needs.

The environment is made without a full ``pip install apache-airflow`` (64 s for 3.3.2 with a warm pip
cache here, per Airflow version CI runs): its site-packages links the installed files of exactly the
distributions that the wheel's own ``Requires-Dist`` (plus ``apache-airflow``) reach in this test run's
virtual environment, which the Makefile installed with its constraints. Nothing outside that closure
comes along (not this project's editable install, not the dev tools), so an import the wheel does not
declare fails there as it would after ``pip install``; pip then installs the wheel itself into it.
Nothing here writes into this test run's environment.
"""

from __future__ import annotations

import email.parser
import os
import subprocess
import sys
import venv
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
PROJECT = "airflow-provider-batches"


@dataclass(frozen=True)
class Dists:
    sdist: Path
    wheel: Path


def build_dists(outdir: Path) -> Dists:
    """What ``make dist`` runs: the sdist, the wheel built from that sdist, and ``twine check --strict``.

    :param outdir: where the two files go.
    """
    run([sys.executable, "-m", "build", "--outdir", str(outdir), str(REPO)], timeout=300)
    (sdist,) = outdir.glob("*.tar.gz")
    (wheel,) = outdir.glob("*.whl")
    run([sys.executable, "-m", "twine", "check", "--strict", str(sdist), str(wheel)], timeout=120)
    return Dists(sdist, wheel)


def wheel_requirements(wheel: Path, extras: tuple[str, ...] = ()) -> list[Requirement]:
    """The wheel's ``Requires-Dist`` that apply here, with the given extras requested.

    :param wheel: the built wheel.
    :param extras: extras of the project to request, e.g. ``("emulator",)``.
    """
    with zipfile.ZipFile(wheel) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        meta = email.parser.BytesParser().parsebytes(zf.read(name))
    return [r for r in map(Requirement, meta.get_all("Requires-Dist") or []) if _applies(r, extras)]


def _applies(req: Requirement, extras: tuple[str, ...] | frozenset[str]) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({"extra": e}) for e in ("", *extras))


def closure(roots: list[Requirement]) -> list[metadata.Distribution]:
    """Every installed distribution the requirements reach, each checked against the version asked for.

    :param roots: the requirements to start from.
    :raises AssertionError: a requirement is not installed, or not in a version that satisfies it.
    """
    found: dict[str, metadata.Distribution] = {}
    done: set[tuple[str, frozenset[str]]] = set()
    pending = [(r, PROJECT) for r in roots]
    while pending:
        req, wanted_by = pending.pop()
        name = canonicalize_name(req.name)
        key = (name, frozenset(req.extras))
        if name == PROJECT or key in done:
            continue
        done.add(key)
        try:
            dist = found.get(name) or metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise AssertionError(f"{req} (wanted by {wanted_by}) is not installed here") from None
        assert req.specifier.contains(dist.version, prereleases=True), (
            f"{wanted_by} wants {req}, installed is {dist.version}"
        )
        found[name] = dist
        subs = map(Requirement, dist.requires or [])
        pending += [(sub, name) for sub in subs if _applies(sub, frozenset(req.extras))]
    return list(found.values())


@dataclass
class WheelEnv:
    """A virtual environment (no pip, no system site-packages) to install the wheel into."""

    path: Path

    @classmethod
    def create(cls, path: Path) -> WheelEnv:
        venv.EnvBuilder(with_pip=False, system_site_packages=False, symlinks=True).create(path)
        return cls(path)

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def site_packages(self) -> Path:
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        return self.path / "lib" / version / "site-packages"

    def link(self, dists: list[metadata.Distribution]) -> int:
        """Link what the distributions installed into site-packages; returns how many links.

        Each file is linked through the shallowest directory that no distribution but its own has files
        in (``airflow/`` holds core, the task SDK and every provider: it is made, its parts linked), so
        that nothing of a distribution outside ``dists`` comes along.

        :param dists: installed distributions of this test run's environment.
        """
        owners: dict[str, set[str]] = {}
        for dist in metadata.distributions():
            name = dist.metadata["Name"]  # parsed on each access: once per distribution
            for rel in _site_files(dist):
                for prefix in _prefixes(rel):
                    owners.setdefault(prefix, set()).add(name)
        linked: set[str] = set()
        for dist in dists:
            name = dist.metadata["Name"]
            for rel in _site_files(dist):
                prefix = next((p for p in _prefixes(rel) if owners[p] == {name}), rel)  # rel: a shared file
                if prefix in linked:
                    continue
                source, target = Path(dist.locate_file(prefix)), self.site_packages / prefix
                if source.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.symlink_to(source)
                linked.add(prefix)
        return len(linked)

    def pip(self, *args: str) -> subprocess.CompletedProcess[str]:
        """pip of this test run, acting on this environment."""
        return run(
            [sys.executable, "-m", "pip", "--python", str(self.python), "--disable-pip-version-check", *args],
            timeout=120,
        )

    def run(self, *args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
        """This environment's python with the arguments, from ``cwd`` (never the repository)."""
        cmd = [str(self.python), *args]
        return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=180, check=False)


def _site_files(dist: metadata.Distribution) -> list[str]:
    """The distribution's files under site-packages (not its console scripts and data under ``..``)."""
    assert dist.files is not None, f"{dist.metadata['Name']} has no RECORD"
    return [rel for rel in map(str, dist.files) if not rel.startswith("../")]


def _prefixes(rel: str) -> list[str]:
    """``a/b/c.py`` -> ``a``, ``a/b``, ``a/b/c.py``."""
    parts = rel.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without anything that would point a python at the source tree or at this venv."""
    drop = ("AIRFLOW", "PYTHON", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(extra)
    return env


def run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, env=clean_env())
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done
