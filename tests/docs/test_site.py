"""The documentation site: it builds strict, a fault of each kind fails the build, and the API reference
covers every public class and function of the package, each with a docstring."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from tests.docs.blocks import REPO

PACKAGE = REPO / "airflow_provider_batches"
EMULATOR = PACKAGE / "emulator"

pytestmark = pytest.mark.once  # MkDocs reads the sources; no Airflow runs


def _build(root: Path, site: Path) -> subprocess.CompletedProcess[str]:
    mkdocs = Path(sys.executable).parent / "mkdocs"
    return subprocess.run(
        [str(mkdocs), "build", "--strict", "-f", str(root / "docs" / "mkdocs.yml"), "-d", str(site)],
        cwd=root,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    built = _build(REPO, site)
    assert built.returncode == 0, built.stderr[-5000:]
    return site


@pytest.fixture
def copy_of_repo(tmp_path: Path) -> Path:
    """What the build reads, copied, so that a test can break it."""
    for name in ("docs", "airflow_provider_batches", "example_dags"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "CHANGELOG.md", tmp_path)
    return tmp_path


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def _break_docstring(root: Path, addition: str) -> None:
    outcome = root / "airflow_provider_batches" / "outcome.py"
    text = outcome.read_text()
    anchor = "    Decide what ``batch`` means for the task waiting on it.\n"
    assert anchor in text, "the docstring this test edits has moved"
    outcome.write_text(text.replace(anchor, f"{anchor}\n    {addition}\n"))


FAULTS = {
    "a link to a missing page": (
        lambda r: _append(r / "docs/pages/index.md", "\n[gone](no-such-page.md)\n"),
        "no-such-page.md",
    ),
    "a link to a missing anchor": (
        lambda r: _append(r / "docs/pages/index.md", "\n[gone](installation.md#no-such-anchor)\n"),
        "no-such-anchor",
    ),
    "a reference that does not resolve": (
        lambda r: _append(
            r / "docs/pages/index.md", "\n[`Nope`][airflow_provider_batches.hooks.mka1.Nope]\n"
        ),
        "airflow_provider_batches.hooks.mka1.Nope",
    ),
    "a docstring role to a missing object": (
        lambda r: _break_docstring(r, "See :class:`NoSuchThing`."),
        "NoSuchThing",
    ),
    "a docstring parameter the signature lacks": (
        lambda r: _break_docstring(r, ":param no_such_parameter: not there."),
        "no_such_parameter",
    ),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_the_build_fails_on(fault: str, copy_of_repo: Path) -> None:
    make_fault, named = FAULTS[fault]
    make_fault(copy_of_repo)
    built = _build(copy_of_repo, copy_of_repo / "site")
    assert built.returncode != 0, f"the build passed with {fault}"
    assert named in built.stderr, built.stderr[-3000:]


def _inventory(site: Path) -> set[str]:
    data = (site / "objects.inv").read_bytes()
    header_end = 0
    for _ in range(4):  # four header lines, then the zlib body
        header_end = data.index(b"\n", header_end) + 1
    return {line.split(" ", 1)[0] for line in zlib.decompress(data[header_end:]).decode().splitlines()}


def _public_objects() -> dict[str, ast.AST]:
    """Every public class, function and method defined in the package, by its dotted path."""
    found: dict[str, ast.AST] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if EMULATOR in path.parents:
            continue  # the emulator's face is its package's __all__ (below)
        module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.parse(path.read_text()).body:
            if (
                isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                and node.name[0] != "_"
            ):
                found[f"{module}.{node.name}"] = node
                if isinstance(node, ast.ClassDef):
                    for member in node.body:
                        if (
                            isinstance(member, ast.FunctionDef | ast.AsyncFunctionDef)
                            and member.name[0] != "_"
                        ):
                            found[f"{module}.{node.name}.{member.name}"] = member
    return found


def _emulator_public_names() -> list[str]:
    tree = ast.parse((EMULATOR / "__init__.py").read_text())
    (names,) = [
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in node.targets)
    ]
    return [f"airflow_provider_batches.emulator.{ast.literal_eval(n)}" for n in names.elts]  # type: ignore[attr-defined]


def test_the_reference_covers_every_public_object(site: Path) -> None:
    documented = _inventory(site)
    missing = sorted(set(_public_objects()) - documented) + [
        n for n in _emulator_public_names() if n not in documented
    ]
    assert not missing, f"public objects missing from the API reference: {missing}"


def test_every_public_object_has_a_docstring() -> None:
    bare = [name for name, node in _public_objects().items() if not ast.get_docstring(node)]  # type: ignore[arg-type]
    assert not bare, f"public objects without a docstring: {bare}"
