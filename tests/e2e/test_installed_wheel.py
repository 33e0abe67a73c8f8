"""The built sdist and wheel: their contents, and the wheel installed into a fresh environment with Airflow.

There, run from a directory outside the repository: Airflow lists the provider and what it registers, the
installed package is typed, the example DAGs (taken from the sdist) parse, and the emulator serves once
the ``[emulator]`` extra is in. wheel_env says how the environment is made and why it still tests the wheel.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import requests
from packaging.requirements import Requirement

from airflow_provider_batches import __version__
from tests.e2e.wheel_env import REPO, Dists, WheelEnv, build_dists, clean_env, closure, wheel_requirements

pytestmark = pytest.mark.e2e

PACKAGE = "airflow_provider_batches"
PROVIDER = "airflow-provider-batches"
REGISTERED = {
    "hooks": ["airflow_provider_batches.hooks.mka1"],
    "operators": ["airflow_provider_batches.operators.mka1", "airflow_provider_batches.operators.mka1_job"],
    "sensors": ["airflow_provider_batches.sensors.mka1"],
    "triggers": ["airflow_provider_batches.triggers.mka1", "airflow_provider_batches.triggers.mka1_job"],
}
READY = re.compile(r"^MKA1 emulator listening on (http://127\.0\.0\.1:\d+)$")


def tracked(under: str) -> set[str]:
    """The files git tracks under a directory of the repository."""
    out = subprocess.run(
        ["git", "ls-files", under], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    return {f for f in out if "__pycache__" not in f}


@dataclass
class Installed:
    venv: WheelEnv
    outside: Path  # working directory of every command: not the repository, so not the source tree
    home: Path

    def environ(self, dags_folder: Path | None = None) -> dict[str, str]:
        return clean_env(
            AIRFLOW_HOME=str(self.home),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__CORE__DAGS_FOLDER=str(dags_folder or self.home / "dags"),
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{self.home / 'airflow.db'}",
            PYTHONDONTWRITEBYTECODE="1",  # no .pyc into the linked directories of this test run's venv
        )

    def python(self, *args: str, dags_folder: Path | None = None) -> str:
        done = self.venv.run(*args, env=self.environ(dags_folder), cwd=self.outside)
        assert done.returncode == 0, f"{args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout


# Runs each `airflow ...` command through airflow.__main__.main, the `airflow` console script, one after
# the other in this one process (each process of its own costs Airflow's start-up, 4 s or more here);
# then imports each module given and looks up the task decorators the provider info declares.
PROVIDERS_PROBE = """
import contextlib, importlib, importlib.util, io, json, sys
from airflow.__main__ import main
from airflow.providers_manager import ProvidersManager
from airflow_provider_batches.get_provider_info import get_provider_info
asked = json.loads(sys.argv[1])
outputs = []
for command in asked["commands"]:
    sys.argv = ["airflow", *command, "-o", "json"]
    with contextlib.redirect_stdout(io.StringIO()) as out:
        main()
    outputs.append(out.getvalue())
declared = [d["name"] for d in get_provider_info().get("task-decorators", [])]
registered = ProvidersManager().taskflow_decorators
print(json.dumps({
    "outputs": outputs,
    "files": {m: importlib.import_module(m).__file__ for m in asked["modules"]},
    "declared_decorators": declared,
    "unregistered_decorators": [d for d in declared if d not in registered],
    "common_ai_installed": importlib.util.find_spec("airflow.providers.common.ai") is not None,
    "adapter_imported": "airflow_provider_batches.adapters.common_ai" in sys.modules,
    "openlineage_installed": importlib.util.find_spec("airflow.providers.openlineage") is not None,
    "lineage_imported": "airflow_provider_batches.lineage" in sys.modules,
}))
"""


def _json_of(output: str) -> Any:
    """The JSON line of a command's output: Airflow 3.0 prints its own log lines (``[2026-...``) around it."""
    for line in output.splitlines():
        if line.startswith(("[", "{")):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    raise AssertionError(f"no JSON in the output:\n{output[-3000:]}")


def install(dists: Dists, root: Path, extras: tuple[str, ...] = ()) -> Installed:
    """A fresh environment with the wheel installed by pip, its requirements and Airflow's in the closure."""
    env = WheelEnv.create(root / "venv")
    airflow = Requirement(f"apache-airflow=={metadata.version('apache-airflow')}")
    env.link(closure([airflow, *wheel_requirements(dists.wheel, extras)]))
    assert not (env.site_packages / PACKAGE).exists(), "nothing of the project comes from this test run"
    env.pip("install", "--no-deps", "--no-index", str(dists.wheel))
    env.pip("check")  # every installed distribution's requirements are met, the wheel's included
    (root / "outside").mkdir()
    (root / "home").mkdir()
    return Installed(env, root / "outside", root / "home")


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> Dists:
    return build_dists(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module")
def installed(dists, tmp_path_factory) -> Installed:
    return install(dists, tmp_path_factory.mktemp("wheel-env"))


@pytest.fixture(scope="module")
def installed_with_emulator(dists, tmp_path_factory) -> Installed:
    return install(dists, tmp_path_factory.mktemp("wheel-env-emulator"), extras=("emulator",))


def test_sdist_has_what_a_source_build_needs(dists: Dists) -> None:
    with tarfile.open(dists.sdist) as tf:
        root = f"{PACKAGE}-{__version__}/"
        names = {n.removeprefix(root) for n in tf.getnames()}
    assert {"pyproject.toml", "PKG-INFO", "README.md", "CHANGELOG.md", "LICENSE"} <= names
    assert tracked(PACKAGE) <= names
    # the example DAGs ship in the sdist, not in the wheel (docs: Install and connect)
    assert tracked("example_dags") <= names
    # build_dists built the wheel from this sdist, so nothing a build needs is missing from it


def test_wheel_has_the_package_emulator_and_py_typed_only(dists: Dists) -> None:
    with zipfile.ZipFile(dists.wheel) as zf:
        names = set(zf.namelist())
        info = f"{PACKAGE}-{__version__}.dist-info"
        entry_points = zf.read(f"{info}/entry_points.txt").decode()
        meta = zf.read(f"{info}/METADATA").decode()
    package = {n for n in names if not n.startswith(info)}
    assert package == tracked(PACKAGE), "the wheel holds exactly the package's tracked files"
    assert f"{PACKAGE}/py.typed" in package
    assert f"{PACKAGE}/emulator/__main__.py" in package
    assert f"{info}/licenses/LICENSE" in names
    assert "[apache_airflow_provider]" in entry_points
    assert "provider_info = airflow_provider_batches.get_provider_info:get_provider_info" in entry_points
    assert f"\nVersion: {__version__}\n" in meta
    assert "\nProvides-Extra: emulator\n" in meta
    # the common-ai batch adapter: an entry point and an extra, nothing the provider info names
    assert "[airflow.providers.common.ai.batch_adapters]" in entry_points
    assert "mka1 = airflow_provider_batches.adapters.common_ai:MKA1BatchAdapter" in entry_points
    assert "\nProvides-Extra: common-ai\n" in meta


def test_airflow_lists_the_provider_and_what_it_registers(installed: Installed) -> None:
    commands = [
        ["providers", "list"],
        ["providers", "get", PROVIDER, "--full"],
        ["providers", "hooks"],
        ["providers", "triggers"],
        ["providers", "behaviours"],
    ]
    modules = [m for ms in REGISTERED.values() for m in ms]
    probe = json.dumps({"commands": commands, "modules": modules})
    found = json.loads(installed.python("-c", PROVIDERS_PROBE, probe).splitlines()[-1])
    listed, full, hooks, triggers, behaviours = map(_json_of, found["outputs"])

    (provider,) = [p for p in listed if p["package_name"] == PROVIDER]
    assert provider["version"] == __version__
    (info,) = full
    for kind, registered in REGISTERED.items():
        assert [m for entry in info[kind] for m in entry["python-modules"]] == registered, kind
    (conn_type,) = info["connection-types"]
    assert conn_type["connection-type"] == "mka1"
    (mka1,) = [h for h in hooks if h["connection_type"] == "mka1"]
    assert mka1["class"] == "airflow_provider_batches.hooks.mka1.MKA1Hook"
    assert (mka1["hook_name"], mka1["package_name"]) == ("MKA1", PROVIDER)
    assert sorted(t["class"] for t in triggers if t["package_name"] == PROVIDER) == REGISTERED["triggers"]
    if metadata.version("apache-airflow").startswith("3.0."):
        # 3.0 reads UI behaviours through Flask AppBuilder: without the FAB provider it lists no hook's
        assert behaviours == []
    else:
        assert {"field_behaviours": "mka1"} in behaviours
    # every registered module imports, and from the files pip installed out of the wheel
    for module, file in found["files"].items():
        assert Path(file).is_relative_to(installed.venv.site_packages), (module, file)
        assert not Path(file).is_symlink(), f"{module} is not the wheel's own file"
    assert found["declared_decorators"] == ["mka1_batch"]
    assert found["unregistered_decorators"] == []
    # common-ai is not installed here: the provider registered everything without it, and without
    # importing its adapter
    assert (found["common_ai_installed"], found["adapter_imported"]) == (False, False)
    # nor the openlineage provider: the operators imported without it, and without their lineage module
    assert (found["openlineage_installed"], found["lineage_imported"]) == (False, False)


def test_installed_package_is_typed(installed: Installed) -> None:
    probe = (
        "import json\nfrom importlib import metadata\n"
        f"print(json.dumps([str(f) for f in metadata.files({PROVIDER!r})]))"
    )
    recorded = json.loads(installed.python("-c", probe).splitlines()[-1])
    assert f"{PACKAGE}/py.typed" in recorded, "pip installed py.typed as part of the wheel"
    assert (installed.venv.site_packages / PACKAGE / "py.typed").is_file()


def test_example_dags_from_the_sdist_parse(installed: Installed, dists: Dists, tmp_path: Path) -> None:
    with tarfile.open(dists.sdist) as tf:
        tf.extractall(tmp_path, filter="data")
    dags_folder = tmp_path / f"{PACKAGE}-{__version__}" / "example_dags"
    probe = (
        "import json, sys\n"
        "try:\n"
        "    from airflow.dag_processing.dagbag import DagBag\n"  # Airflow 3.1+
        "except ImportError:\n"
        "    from airflow.models.dagbag import DagBag\n"
        "bag = DagBag(dag_folder=sys.argv[1])\n"
        "print(json.dumps({'errors': {str(k): v for k, v in bag.import_errors.items()},\n"
        "    'dags': {d: bag.dags[d].fileloc for d in bag.dags},\n"
        "    'package': sys.modules['airflow_provider_batches'].__file__}))\n"
    )
    out = installed.python("-c", probe, str(dags_folder), dags_folder=dags_folder)
    parsed = json.loads(out.splitlines()[-1])
    assert parsed["errors"] == {}
    files = {p.name for p in dags_folder.glob("*.py")}
    assert files, "the sdist carries the example DAGs"
    assert {Path(f).name for f in parsed["dags"].values()} == files, "every example file defines a DAG"
    assert Path(parsed["package"]).is_relative_to(installed.venv.site_packages)


@pytest.fixture
def emulator_from_wheel(installed_with_emulator: Installed) -> Iterator[tuple[subprocess.Popen[str], str]]:
    env = installed_with_emulator.venv
    proc = subprocess.Popen(
        [str(env.python), "-m", "airflow_provider_batches.emulator", "--port", "0", "--api-key", "wheel-key"],
        cwd=installed_with_emulator.outside,
        env=installed_with_emulator.environ(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        match = READY.match(line)
        assert match, f"unexpected first line {line!r}; stderr: {proc.stderr.read() if proc.stderr else ''}"
        yield proc, match.group(1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_emulator_serves_from_the_wheel_with_its_extra(
    emulator_from_wheel: tuple[subprocess.Popen[str], str],
) -> None:
    proc, base_url = emulator_from_wheel
    auth = {"Authorization": "Bearer wheel-key"}
    line = b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions"}\n'
    assert requests.get(f"{base_url}/_emulator/health", timeout=10).json()["status"] == "ok"
    assert requests.get(f"{base_url}/api/v1/llm/batches", timeout=10).status_code == 401
    uploaded = requests.post(  # a multipart upload: python-multipart comes with the extra
        f"{base_url}/api/v1/llm/files",
        headers=auth,
        files={"file": ("in.jsonl", line)},
        data={"purpose": "batch"},
        timeout=10,
    )
    assert uploaded.status_code == 200, uploaded.text
    assert uploaded.json()["id"].startswith("file")
    listed = requests.get(f"{base_url}/api/v1/llm/files", headers=auth, timeout=10)
    assert [f["id"] for f in listed.json()["data"]] == [uploaded.json()["id"]]

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0, "the emulator stops cleanly on SIGTERM"
