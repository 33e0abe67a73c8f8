"""Every code example of the documentation and the README runs, so that none can rot.

A Python example is a file of docs/examples/ shown by a snippet include: a DAG file runs in
`airflow dags test` against the emulator, a script runs with python, a ``test_*.py`` file runs in
pytest. A ``pycon`` block is a doctest. Each shell command must match a rule below that checks it; data
blocks must parse. The README cannot include a file (GitHub shows it raw), so its Python is checked to
be a verbatim part of an example file that runs.
"""

from __future__ import annotations

import configparser
import doctest
import json
import re
import shlex
import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import requests
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.docs.blocks import (
    EXAMPLES,
    REPO,
    Block,
    all_blocks,
    example_files,
    example_kind,
    include_of,
    section_of,
)
from tests.e2e.conftest import AirflowHome, airflow_env

BLOCKS = all_blocks()
PYTHON = {"python", "py"}
SHELL = {"bash", "sh", "shell"}
DATA = {"json", "jsonl", "yaml", "toml", "ini"}
OUTPUT = {"text", "console", "output"}
SHOWN_FROM = (EXAMPLES, REPO / "example_dags")


def _of(langs: set[str]) -> list[Block]:
    return [b for b in BLOCKS if b.lang in langs]


def _where(block: Block) -> str:
    return block.where


def _examples(kind: str) -> list[Path]:
    return [p for p in example_files() if example_kind(p) == kind]


def test_every_block_names_its_language() -> None:
    known = PYTHON | SHELL | DATA | OUTPUT | {"pycon"}
    unknown = [f"{b.where} ({b.lang or 'none'})" for b in BLOCKS if b.lang not in known]
    assert not unknown, f"code blocks in a language no rule checks: {unknown}"


@pytest.mark.parametrize("block", [b for b in _of(PYTHON) if b.source.name != "README.md"], ids=_where)
def test_python_in_a_page_is_an_included_example(block: Block) -> None:
    included = include_of(block)
    assert included, f"{block.where}: Python shown inline; put it in docs/examples/ and include it"
    path, section = included
    assert path.is_file() and path.parent in SHOWN_FROM, f"{block.where}: {path} is not an example file"
    assert section_of(path, section).strip(), f"{block.where}: section {section!r} of {path.name} is empty"


@pytest.mark.parametrize("block", [b for b in _of(PYTHON) if b.source.name == "README.md"], ids=_where)
def test_python_in_the_readme_is_part_of_an_example(block: Block) -> None:
    sources = [p.read_text() for folder in SHOWN_FROM for p in folder.glob("*.py")]
    assert any(block.body.strip() in text for text in sources), (
        f"{block.where}: not a verbatim part of a file in docs/examples/ or example_dags/"
    )


def test_every_example_file_is_shown_somewhere() -> None:
    shown = {include[0] for b in _of(PYTHON) if (include := include_of(b))}
    assert not [p.name for p in example_files() if p not in shown]


# -- examples that run -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def docs_airflow(emulator_session, tmp_path_factory) -> AirflowHome:
    """A real Airflow on SQLite whose DAGs folder is docs/examples, ``mka1_default`` at the emulator."""
    path = tmp_path_factory.mktemp("docs-airflow")
    env = airflow_env(path, emulator_session.base_url)
    env["AIRFLOW__CORE__DAGS_FOLDER"] = str(EXAMPLES)
    home = AirflowHome(path, env)
    migrated = home.run("db", "migrate")
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    # What the DAG processor does: register the DAGs and their assets. `dags test` does not on Airflow
    # 2.11 and 3.0, where an unregistered asset gets no event (2.11) or fails its task (3.0).
    reserialized = home.run("dags", "reserialize")
    assert reserialized.returncode == 0, reserialized.stderr[-3000:]
    return home


def _dag_run_states(home: AirflowHome, dag_id: str) -> list[str]:
    with sqlite3.connect(home.path / "airflow.db") as db:
        return [row[0] for row in db.execute("SELECT state FROM dag_run WHERE dag_id = ?", (dag_id,))]


@pytest.fixture(scope="module")
def dag_example_runs(docs_airflow: AirflowHome, tmp_path_factory) -> dict[str, tuple[int | None, str]]:
    """Every DAG example through ``airflow dags test``, in one process: by dag_id, its exit code (None:
    it never finished) and its part of the output."""
    dag_ids = [p.stem for p in _examples("dag")]
    run = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).with_name("dags_test_many.py")),
            str(tmp_path_factory.mktemp("dags")),
            *dag_ids,
        ],
        env=docs_airflow.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=1800,
        check=False,
    )
    runs: dict[str, tuple[int | None, str]] = {}
    for dag_id in dag_ids:
        part = run.stdout.partition(f"=== {dag_id}: start ===")[2]
        output, ended, rest = part.partition(f"=== {dag_id}: exit ")
        runs[dag_id] = (int(rest.split(" ", 1)[0]) if ended else None, output or run.stdout[-5000:])
    return runs


@pytest.mark.e2e
@pytest.mark.parametrize("path", _examples("dag"), ids=lambda p: p.stem)
def test_dag_example_runs(path: Path, docs_airflow: AirflowHome, dag_example_runs) -> None:
    code, output = dag_example_runs[path.stem]
    assert code == 0, output[-6000:]
    assert _dag_run_states(docs_airflow, path.stem) == ["success"], output[-6000:]


@pytest.mark.parametrize("path", _examples("script"), ids=lambda p: p.stem)
def test_script_example_runs(path: Path, docs_airflow: AirflowHome, tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(path)],
        cwd=tmp_path,
        env=docs_airflow.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]


@pytest.mark.parametrize("path", _examples("pytest"), ids=lambda p: p.stem)
def test_pytest_example_passes(path: Path, docs_airflow: AirflowHome, tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(path),
            "-q",
            "-p",
            "no:cacheprovider",
            "-c",
            str(tmp_path / "pytest.ini"),
        ],
        cwd=tmp_path,
        env=docs_airflow.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0 and " passed" in run.stdout, run.stdout[-3000:] + run.stderr[-3000:]


@pytest.mark.parametrize("block", _of({"pycon"}), ids=_where)
def test_pycon_block_is_a_passing_doctest(block: Block, docs_airflow: AirflowHome, monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_MKA1_DEFAULT", docs_airflow.env["AIRFLOW_CONN_MKA1_DEFAULT"])
    test = doctest.DocTestParser().get_doctest(block.body, {}, block.where, str(block.source), block.line)
    assert test.examples, f"{block.where}: a pycon block without a >>> line"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    assert runner.summarize(verbose=False).failed == 0, f"{block.where}: the doctest failed (output above)"


@pytest.mark.parametrize("block", _of(DATA), ids=_where)
def test_data_block_parses(block: Block) -> None:
    if block.lang == "json":
        json.loads(block.body)
    elif block.lang == "jsonl":
        for line in block.body.splitlines():
            json.loads(line)
    elif block.lang == "yaml":
        yaml.safe_load(block.body)
    elif block.lang == "toml":
        tomllib.loads(block.body)
    else:
        configparser.ConfigParser().read_string(block.body)


# -- shell commands ----------------------------------------------------------------------------------


def _commands(block: Block) -> list[list[str]]:
    """The block's commands as words: a ``\\`` continuation or an open quote joins lines."""
    commands, pending = [], ""
    for line in block.body.splitlines():
        pending += line + "\n"
        if pending.rstrip().endswith("\\"):
            pending = pending.rstrip()[:-1] + " "
            continue
        try:
            words = shlex.split(pending, comments=True)
        except ValueError:  # an open quote: the command goes on
            continue
        if words:
            commands.append(words)
        pending = ""
    assert not pending.strip(), f"{block.where}: an unfinished command: {pending!r}"
    return commands


def _make_targets() -> set[str]:
    return set(re.findall(r"^([\w.-]+):", (REPO / "Makefile").read_text(), re.MULTILINE))


def _declared_packages() -> tuple[set[str], set[str]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    requirements = [*project["dependencies"], *(r for group in extras.values() for r in group)]
    return {canonicalize_name(Requirement(r).name) for r in requirements}, set(extras)


def _check_pip(words: list[str]) -> None:
    assert words[1] == "install", f"pip {words[1]}: only `pip install` is documented"
    specs = [
        w for i, w in enumerate(words[2:], 2) if not w.startswith("-") and words[i - 1] not in ("-c", "-r")
    ]
    ours, extras = _declared_packages()
    for spec in specs:
        if spec.endswith(".whl"):
            assert spec == "dist/*.whl" and "dist" in _make_targets(), f"{spec}: not what `make dist` builds"
            continue
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        if name == "airflow-provider-batches":
            assert requirement.extras <= extras, f"{spec}: no such extra (have {sorted(extras)})"
        else:
            assert name in ours, f"{spec}: not a package pyproject.toml declares"


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, check=False)


def _hook_reads(conn_id: str, env: dict[str, str]) -> None:
    code = (
        f"from airflow_provider_batches.hooks.mka1 import MKA1Hook as H; H(mka1_conn_id={conn_id!r}).settings"
    )
    read = _run([sys.executable, "-c", code], env)
    assert read.returncode == 0, f"the hook cannot read connection {conn_id!r}: {read.stderr[-2000:]}"


def _check_export(assignment: str, home: AirflowHome) -> None:
    name, _, value = assignment.partition("=")
    if name.startswith("AIRFLOW_CONN_"):
        _hook_reads(name.removeprefix("AIRFLOW_CONN_").lower(), {**home.env, name: value})
    elif name.startswith("AIRFLOW__"):
        section, _, key = name.removeprefix("AIRFLOW__").partition("__")
        section, key = section.lower(), key.lower()
        code = f"from airflow.configuration import conf; assert conf.has_option({section!r}, {key!r})"
        known = _run([sys.executable, "-c", code], home.env)
        assert known.returncode == 0, f"{name}: Airflow has no option [{section}] {key}"
    else:
        pytest.fail(f"export {name}: only AIRFLOW_CONN_ and AIRFLOW__ variables are documented")


def _check_airflow(words: list[str], home: AirflowHome) -> None:
    if words[1:3] == ["connections", "add"]:
        added = home.run(*words[1:])
        assert added.returncode == 0, added.stdout[-2000:] + added.stderr[-2000:]
        _hook_reads(words[3], home.env)
        home.run("connections", "delete", words[3])
        return
    helped = home.run(*words[1:], "--help")
    assert helped.returncode == 0, f"`{shlex.join(words)}` is not an Airflow command: {helped.stderr[-2000:]}"


def _send_curl(words: list[str], emulator_url: str) -> None:
    """A ``curl`` to the emulator (``localhost:8000`` in the docs), sent to the test's emulator."""
    method, data, url = "GET", None, None
    args = iter(words[1:])
    for word in args:
        if word == "-X":
            method = next(args)
        elif word in ("-d", "--data"):
            data, method = next(args), method if method != "GET" else "POST"
        elif not word.startswith("-"):
            url = word
    assert url and re.match(r"(http://)?(localhost|127\.0\.0\.1):8000/", url), f"{url}: not the emulator"
    sent = requests.request(method, re.sub(r"^(http://)?[^/]+", emulator_url, url), data=data, timeout=30)
    assert sent.status_code < 400, f"the emulator answered {sent.status_code}: {sent.text[:500]}"


def _check_command(words: list[str], home: AirflowHome, emulator_url: str) -> None:
    program = words[0]
    if program == "make":
        missing = {w for w in words[1:] if "=" not in w} - _make_targets()
        assert not missing, f"no make target {sorted(missing)}"
    elif program == "pip":
        _check_pip(words)
    elif program == "export":
        _check_export(words[1], home)
    elif program == "airflow":
        _check_airflow(words, home)
    elif Path(program).name in ("python", "python3") and words[1:3] == ["-m", "pytest"]:
        _check_command(words[2:], home, emulator_url)
    elif Path(program).name in ("python", "python3") and words[1] == "-m":
        helped = _run([sys.executable, "-m", words[2], "--help"], {**home.env, "PYTHONPATH": str(REPO)})
        assert helped.returncode == 0, f"python -m {words[2]} --help failed: {helped.stderr[-2000:]}"
    elif program == "curl":
        _send_curl(words, emulator_url)
    elif program in ("pytest", "bash"):
        paths = [w.split("::")[0] for w in words[1:] if not w.startswith("-")]
        assert paths and all((REPO / p).exists() for p in paths), f"{shlex.join(words)}: no such path"
    else:
        pytest.fail(f"no rule checks the command {program!r}")


@pytest.mark.parametrize("block", _of(SHELL), ids=_where)
def test_shell_commands_are_real(block: Block, docs_airflow: AirflowHome, emulator) -> None:
    commands = _commands(block)
    assert commands, f"{block.where}: an empty shell block"
    for words in commands:
        try:
            _check_command(words, docs_airflow, emulator.base_url)
        except AssertionError as error:
            raise AssertionError(f"{block.where}: `{shlex.join(words)}`: {error}") from None
