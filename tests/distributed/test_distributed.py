"""
The provider on the distributed engine: PostgreSQL, CeleryExecutor on Redis, two triggerers, two workers.

The steps run in order on one deployment (see conftest.py); each asserts what docs/pages/deployments.md
claims. Once per CI run, on the newest Airflow.
"""

from __future__ import annotations

import base64
import json
import time
from collections import Counter
from typing import Any

import pytest
from cryptography.fernet import Fernet

from airflow_provider_batches.emulator import EmulatorAdmin
from airflow_provider_batches.hooks.mka1 import MKA1Hook
from tests.distributed.conftest import ROOT, report
from tests.distributed.dags.mka1_distributed import BATCHES, HANDOVER_BATCHES, write_requests
from tests.distributed.deployment import FAILOVER_SETTINGS, Deployment, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.distributed, pytest.mark.timeout(900)]

FANOUT, WORKERS, HANDOVER = "mka1_distributed_fanout", "mka1_distributed_workers", "mka1_distributed_handover"
LINES = 240  # four minutes of emulator work a batch, at one line a second
TIMEOUT = 1800  # the operators' `timeout`: the deadline each trigger carries
API = "/api/v1/llm"
STARTED = time.monotonic()
HEALTH_CHECK = FAILOVER_SETTINGS["AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD"]


def hook() -> MKA1Hook:
    return MKA1Hook(mka1_conn_id="mka1_outside")


def emulator(deployment: Deployment) -> EmulatorAdmin:
    return EmulatorAdmin(deployment.emulator_url)


def trigger_run(deployment: Deployment, dag_id: str, conf: dict[str, Any]) -> str:
    wait_for(f"{dag_id} to be parsed", lambda: deployment.rest("GET", f"/dags/{dag_id}"), timeout=180)
    run = deployment.rest("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})
    return str(run["dag_run_id"])


def task_instances(deployment: Deployment, dag_id: str, run_id: str) -> dict[tuple[str, int], dict[str, Any]]:
    rows = deployment.postgres.query(
        "SELECT task_id, map_index, state, try_number, trigger_id, pid FROM task_instance "
        "WHERE dag_id = %s AND run_id = %s",
        (dag_id, run_id),
    )
    keys = ("state", "try_number", "trigger_id", "pid")
    return {(str(r[0]), int(r[1])): dict(zip(keys, r[2:], strict=True)) for r in rows}


def xcoms(deployment: Deployment, dag_id: str, run_id: str) -> dict[tuple[str, int, str], Any]:
    rows = deployment.postgres.query(
        "SELECT task_id, map_index, key, value FROM xcom WHERE dag_id = %s AND run_id = %s", (dag_id, run_id)
    )
    return {(str(t), int(m), str(k)): v for t, m, k, v in rows}


def triggers(deployment: Deployment) -> dict[int, dict[str, Any]]:
    """Every trigger: its triggerer job, creation time and kwargs."""
    fernet = Fernet(deployment.fernet_key.encode())
    rows = deployment.postgres.query(
        "SELECT id, triggerer_id, extract(epoch from created_date), kwargs FROM trigger"
    )
    # Airflow encrypts trigger kwargs with the fernet key, except on some paths (3.3 stores a deferred
    # task's as plain JSON): one more reason they must never carry a secret.
    return {
        int(i): {
            "triggerer_id": t,
            "created": float(c),
            "kwargs": json.loads(k if str(k).startswith("{") else fernet.decrypt(str(k).encode())),
        }
        for i, t, c, k in rows
    }


def found(value: Any, name: str) -> Any:
    """The first value under key ``name`` anywhere in a (serialized) structure."""
    if isinstance(value, dict):
        if name in value:
            return value[name]
        value = list(value.values())
    if isinstance(value, list):
        for item in value:
            hit = found(item, name)
            if hit is not None:
                return hit
    return None


def run_state(deployment: Deployment, dag_id: str, run_id: str) -> str | None:
    state = deployment.rest("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"]
    return str(state) if state in ("success", "failed") else None


def batches_by_id(deployment: Deployment) -> dict[str, Any]:
    return {b.id: b for b in hook().list_batches()}


class Fanout:
    """What the first step hands the later ones."""

    run_id = ""
    calls_at_start = 0


def test_deferred_tasks_survive_a_triggerer_kill_and_a_database_restart(deployment: Deployment) -> None:
    emu = emulator(deployment)
    workdir = ROOT / "fanout"
    outside_input = workdir / "outside.jsonl"
    write_requests(outside_input, LINES, "outside")
    outside = hook().create_batch(
        hook().upload_file(outside_input, purpose="batch").id, "/v1/chat/completions"
    )
    calls_before = emu.calls()
    run_id = trigger_run(
        deployment, FANOUT, {"workdir": str(workdir), "lines": LINES, "outside_batch_id": outside.id}
    )
    Fanout.run_id = run_id
    started = time.monotonic()

    # 1. Every wait defers; the trigger table says which triggerer holds which trigger.
    waits = [("batch", i) for i in range(BATCHES)] + [("outside", -1)]

    def all_held() -> dict[tuple[str, int], int] | None:
        tis = task_instances(deployment, FANOUT, run_id)
        if not all(tis.get(w, {}).get("state") == "deferred" for w in waits):
            return None
        held = triggers(deployment)
        by_wait = {w: tis[w]["trigger_id"] for w in waits}
        if all(held.get(t, {}).get("triggerer_id") is not None for t in by_wait.values()):
            return by_wait
        return None

    by_wait = wait_for("all 21 waits to defer and be held by a triggerer", all_held, timeout=300, interval=1)
    report(
        f"fanout: 20 batch tasks + 1 sensor deferred {time.monotonic() - started:.1f} s after the run started"
    )

    # A triggerer's first trigger builds its in-process execution API, which can hold up its heartbeat
    # on a loaded machine (and let the other take its triggers over): kill only once both run steadily.
    def steady() -> tuple[dict[int, str], dict[int, Any]] | None:
        first = (deployment.triggerer_jobs(), {t: h["triggerer_id"] for t, h in triggers(deployment).items()})
        time.sleep(10)
        second = (
            deployment.triggerer_jobs(),
            {t: h["triggerer_id"] for t, h in triggers(deployment).items()},
        )
        return second if first == second and len(second[0]) == 2 else None

    jobs, _ = wait_for("both triggerers to run steadily", steady, timeout=180, interval=0)
    held = triggers(deployment)
    assert all(held[t]["triggerer_id"] in jobs for t in by_wait.values()), (jobs, held)
    holders = Counter(jobs[held[t]["triggerer_id"]] for t in by_wait.values())
    report(f"fanout: triggers per triggerer before the kill: {dict(sorted(holders.items()))}")
    assert sum(holders.values()) == 21
    deadlines = {t: found(held[t]["kwargs"], "deadline") for t in by_wait.values()}
    for trigger_id, deadline in deadlines.items():
        # Set once, when the task deferred: its start plus the operator's timeout (the sensor's is 7 days).
        expected = TIMEOUT if trigger_id != by_wait[("outside", -1)] else 7 * 24 * 3600
        assert abs(deadline - held[trigger_id]["created"] - expected) < 30, (deadline, held[trigger_id])

    # 2. SIGKILL the triggerer that holds most; the other adopts its triggers.
    victim = holders.most_common(1)[0][0]
    survivor = next(name for name in ("triggerer-1", "triggerer-2") if name != victim)
    survivor_job = next(job for job, name in jobs.items() if name == survivor)
    orphans = [t for t in by_wait.values() if jobs[held[t]["triggerer_id"]] == victim]
    killed_at = time.monotonic()
    deployment.components[victim].kill()

    def adopted() -> bool:
        now = triggers(deployment)
        return all(now[t]["triggerer_id"] == survivor_job for t in orphans)

    wait_for(f"{survivor} to adopt {victim}'s triggers", adopted, timeout=180, interval=0.25)
    adoption = time.monotonic() - killed_at
    after = triggers(deployment)
    assert set(after) >= set(by_wait.values()), "a trigger was deleted or recreated"
    assert {t: found(after[t]["kwargs"], "deadline") for t in by_wait.values()} == deadlines
    tis = task_instances(deployment, FANOUT, run_id)
    assert all(tis[w]["state"] == "deferred" and tis[w]["trigger_id"] == by_wait[w] for w in waits)
    # The adopted triggers really run: each of their batches is polled again, by the survivor.
    orphan_batches = [found(after[t]["kwargs"], "batch_id") for t in orphans]
    polled = {b: emu.calls("GET", f"{API}/batches/{b}") for b in orphan_batches}

    def all_polled_again() -> bool:
        return all(emu.calls("GET", f"{API}/batches/{b}") > n for b, n in polled.items())

    wait_for("every adopted trigger to poll", all_polled_again, timeout=120)
    running = time.monotonic() - killed_at
    report(
        f"triggerer kill: SIGKILL {victim} holding {len(orphans)} of 21 triggers; {survivor} adopted all of "
        f"them {adoption:.1f} s later (heartbeat 1 s, health-check threshold {HEALTH_CHECK} s) and polled "
        f"each of their batches {running:.1f} s after the kill"
    )

    # The killed triggerer's machine comes back: its service manager starts it again.
    deployment.restart_component(victim)

    # 4. Restart PostgreSQL while all 21 tasks are deferred.
    restarted_at = time.monotonic()
    down = deployment.postgres.restart()
    time.sleep(15)  # every component meets the dead connections in its pool
    restarted = deployment.restarted_since(restarted_at)
    report(
        f"database restart: PostgreSQL stopped (fast: every connection cut) and back in {down:.1f} s "
        f"while 21 tasks were deferred; exited on the lost connection and restarted: {restarted or 'none'}"
    )
    # Only triggerers give up on a lost database (Airflow 3.3.2): the rest reconnect by themselves.
    assert all(name.startswith("triggerer") for name in restarted), restarted
    tis = task_instances(deployment, FANOUT, run_id)
    assert all(tis[w]["state"] == "deferred" and tis[w]["trigger_id"] == by_wait[w] for w in waits)

    # The waits are in place: let the emulator's clock run the batches to the end.
    emu.advance_clock(LINES + 30)
    finish = time.monotonic()
    state = wait_for("the fanout run to finish", lambda: run_state(deployment, FANOUT, run_id), timeout=300)
    report(
        f"fanout: run {state} {time.monotonic() - finish:.1f} s after the batches completed; "
        f"{time.monotonic() - started:.1f} s in all"
    )
    tis = task_instances(deployment, FANOUT, run_id)
    assert state == "success", {k: v["state"] for k, v in tis.items()}
    assert all(ti["state"] == "success" for ti in tis.values())
    # Adopted, not retried: every wait finished in its first try.
    assert all(tis[w]["try_number"] == 1 for w in waits), {w: tis[w]["try_number"] for w in waits}

    # Every batch task's output_file_id XCom is its batch's; exactly 20 (+1 outside) created, none cancelled.
    batches = batches_by_id(deployment)
    values = xcoms(deployment, FANOUT, run_id)
    ours = [values[("batch", i, "batch_id")] for i in range(BATCHES)]
    assert len(set(ours)) == BATCHES
    assert set(batches) == {*ours, outside.id}, "a batch no task instance owns"
    for i, batch_id in enumerate(ours):
        assert batches[batch_id].status == "completed"
        assert values[("batch", i, "return_value")] == batches[batch_id].output_file_id
        assert batches[batch_id].request_counts.completed == LINES
    assert values[("outside", -1, "return_value")]["id"] == outside.id
    assert emu.calls("POST", f"{API}/batches") == BATCHES + 1
    assert emu.calls("POST", f"{API}/batches/*/cancel") == 0
    assert all(b.status == "completed" for b in batches.values())
    # Each download is whole: every line of its batch, nothing else in the destination folder.
    results = workdir / "results"
    assert sorted(p.name for p in results.iterdir()) == sorted(f"{i}.jsonl" for i in range(BATCHES))
    for i in range(BATCHES):
        ids = [json.loads(line)["custom_id"] for line in (results / f"{i}.jsonl").read_text().splitlines()]
        assert sorted(ids) == sorted(f"b{i:02d}-{n}" for n in range(LINES))

    calls = emu.calls() - calls_before
    gets = emu.calls("GET", f"{API}/batches/*")
    report(
        f"fanout: {calls} API calls for 20 batch tasks, 20 downloads and 1 sensor "
        f"({calls / (2 * BATCHES + 1):.1f} a task; {gets / (BATCHES + 1):.1f} GET /batches/{{id}} a wait)"
    )


class BatchesCancelledOnHandOver(AssertionError):
    """The triggerer that lost its triggers cancelled their batches when it came back."""


# Airflow 3.3.2's triggerer cancels the triggers it no longer holds with the "user action" message and awaits
# their on_kill; on_kill asks for the task instance's state and, the task being still deferred on the other
# triggerer, leaves the batch running. Before that check, the thawed triggerer cancelled in 3 runs of 4.
def test_a_frozen_triggerer_s_triggers_are_handed_over_without_cancelling(deployment: Deployment) -> None:
    emu = emulator(deployment)
    workdir = ROOT / "handover"
    cancels_before = emu.calls("POST", f"{API}/batches/*/cancel")
    run_id = trigger_run(deployment, HANDOVER, {"workdir": str(workdir), "lines": LINES})
    waits = [("batch", i) for i in range(HANDOVER_BATCHES)]

    def all_held() -> dict[tuple[str, int], int] | None:
        tis = task_instances(deployment, HANDOVER, run_id)
        held = triggers(deployment)
        jobs = deployment.triggerer_jobs()
        if all(tis.get(w, {}).get("state") == "deferred" for w in waits) and all(
            held.get(tis[w]["trigger_id"], {}).get("triggerer_id") in jobs for w in waits
        ):
            return {w: tis[w]["trigger_id"] for w in waits}
        return None

    by_wait = wait_for("the handover waits to defer and be held", all_held, timeout=240, interval=1)
    jobs = deployment.triggerer_jobs()
    held = triggers(deployment)
    holders = Counter(jobs[held[t]["triggerer_id"]] for t in by_wait.values())
    frozen = holders.most_common(1)[0][0]
    other_job = next(job for job, name in jobs.items() if name != frozen)
    theirs = [t for t in by_wait.values() if jobs[held[t]["triggerer_id"]] == frozen]

    # SIGSTOP the triggerer holding most: alive but silent past the threshold; the other takes over.
    frozen_at = time.monotonic()
    deployment.components[frozen].freeze()
    try:
        wait_for(
            f"the other triggerer to take {frozen}'s triggers",
            lambda: all(triggers(deployment)[t]["triggerer_id"] == other_job for t in theirs),
            timeout=180,
            interval=0.5,
        )
        taken = time.monotonic() - frozen_at
    finally:
        deployment.components[frozen].thaw()
    time.sleep(10)  # the thawed triggerer's next loop drops the triggers it no longer holds
    emu.advance_clock(LINES + 30)
    state = wait_for(
        "the handover run to finish", lambda: run_state(deployment, HANDOVER, run_id), timeout=240
    )
    # The thawed triggerer may drop its copies only after the run ended (18 s after SIGCONT, once): count
    # the cancels once every copy it logged has ended.
    frozen_job = next(job for job, name in jobs.items() if name == frozen)
    run_logs = deployment.home / "logs" / f"dag_id={HANDOVER}" / f"run_id={run_id}"
    copies = list(run_logs.glob(f"**/*.trigger.{frozen_job}.log"))
    wait_for(
        f"{frozen}'s copies of the triggers to end",
        lambda: all('"trigger completed"' in p.read_text(errors="replace") for p in copies),
        timeout=120,
        interval=1,
    )
    cancels = emu.calls("POST", f"{API}/batches/*/cancel") - cancels_before
    report(
        f"triggerer freeze: SIGSTOP {frozen} holding {len(theirs)} of {HANDOVER_BATCHES} triggers; the other "
        f"took them over {taken:.1f} s later; after SIGCONT, {len(copies)} copies left behind ended, "
        f"{cancels} batch(es) cancelled"
    )
    if cancels:
        raise BatchesCancelledOnHandOver(
            f"{cancels} batch(es) cancelled when {frozen} came back; the run ended {state}"
        )
    assert state == "success", task_instances(deployment, HANDOVER, run_id)


def test_a_lost_worker_s_tasks_are_retried_on_the_other_and_reattach(deployment: Deployment) -> None:
    emu = emulator(deployment)
    workdir = ROOT / "workers"
    sync_input, upload_input = workdir / "inputs" / "sync.jsonl", workdir / "inputs" / "upload.jsonl"
    write_requests(sync_input, LINES, "sync")
    write_requests(upload_input, 30, "upload")
    sync_file = hook().upload_file(sync_input, purpose="batch")
    before = set(batches_by_id(deployment))
    files_before = {f.id for f in hook().list_files()}
    creates_before = emu.calls("POST", f"{API}/batches")
    cancels_before = emu.calls("POST", f"{API}/batches/*/cancel")

    # worker-b drains (warm shutdown) so that both tasks start on worker-a, and comes back once they run.
    deployment.components["worker-b"].stop()
    # The upload stalls in the emulator: the worker dies with the request in flight.
    emu.add_fault(method="POST", path=f"{API}/files", kind="stall", seconds=120, count=1)
    run_id = trigger_run(deployment, WORKERS, {"workdir": str(workdir), "sync_input_file_id": sync_file.id})

    def both_in_place() -> dict[str, int] | None:
        tis = task_instances(deployment, WORKERS, run_id)
        values = xcoms(deployment, WORKERS, run_id)
        waiting = (
            tis.get(("sync_wait", -1), {}).get("state") == "running"
            and ("sync_wait", -1, "batch_id") in values
        )
        uploading = tis.get(("upload", -1), {}).get("state") == "running" and not emu.faults()
        if waiting and uploading:
            return {"sync_wait": tis[("sync_wait", -1)]["pid"], "upload": tis[("upload", -1)]["pid"]}
        return None

    pids = wait_for("sync_wait to wait and upload to be uploading", both_in_place, timeout=180, interval=0.5)
    worker_a = deployment.components["worker-a"]
    assert all(worker_a.owns(pid) for pid in pids.values()), (pids, "not on worker-a")
    deployment.restart_component("worker-b")
    deployment.wait_worker_ready("worker-b")

    killed_at = time.monotonic()
    worker_a.kill()

    def retried() -> dict[str, int] | None:
        tis = task_instances(deployment, WORKERS, run_id)
        sync, upload = tis[("sync_wait", -1)], tis[("upload", -1)]
        if (
            sync["try_number"] == 2
            and sync["state"] == "running"
            and upload["try_number"] == 2
            and (upload["state"] == "deferred")
        ):
            return {"sync_wait": sync["pid"]}
        return None

    second = wait_for("both tasks to be retried", retried, timeout=240, interval=0.5)
    retry_after = time.monotonic() - killed_at
    assert deployment.components["worker-b"].owns(second["sync_wait"]), "the retry did not run on worker-b"
    report(
        f"worker kill: SIGKILL worker-a mid sync-wait and mid-upload; both retried on worker-b, "
        f"running again (the upload uploaded and deferred) {retry_after:.1f} s later (heartbeat timeout 30 s)"
    )
    # The retries are in place: the sync wait reattached (no second create), the upload created its batch.
    assert emu.calls("POST", f"{API}/batches") == creates_before + 2
    emu.advance_clock(LINES + 30)
    state = wait_for("the workers run to finish", lambda: run_state(deployment, WORKERS, run_id), timeout=240)
    assert state == "success", task_instances(deployment, WORKERS, run_id)

    # Exactly one batch per task instance, the one each XCom names; no orphan batch or input file.
    values = xcoms(deployment, WORKERS, run_id)
    new = {b: batch for b, batch in batches_by_id(deployment).items() if b not in before}
    assert set(new) == {values[("sync_wait", -1, "batch_id")], values[("upload", -1, "batch_id")]}
    for task_id in ("sync_wait", "upload"):
        batch = new[values[(task_id, -1, "batch_id")]]
        assert batch.status == "completed" and values[(task_id, -1, "return_value")] == batch.output_file_id
    assert new[values[("sync_wait", -1, "batch_id")]].input_file_id == sync_file.id
    # Batch output files carry purpose "batch" too: what is left is what was uploaded.
    made = {f for b in batches_by_id(deployment).values() for f in (b.output_file_id, b.error_file_id) if f}
    uploaded = {f.id for f in hook().list_files() if f.purpose == "batch"} - files_before - made
    assert uploaded == {new[values[("upload", -1, "batch_id")]].input_file_id}, "an orphan upload"
    assert emu.calls("POST", f"{API}/batches/*/cancel") == cancels_before
    history = deployment.postgres.query(
        "SELECT task_id, try_number, state FROM task_instance_history WHERE dag_id = %s AND run_id = %s",
        (WORKERS, run_id),
    )
    assert sorted((str(t), int(n)) for t, n, _ in history) == [("sync_wait", 1), ("upload", 1)]
    # No partial file at any destination: the two results, whole, and nothing else.
    results = workdir / "results"
    assert sorted(p.name for p in results.iterdir()) == ["sync.jsonl", "upload.jsonl"]
    assert len((results / "sync.jsonl").read_text().splitlines()) == LINES
    assert len((results / "upload.jsonl").read_text().splitlines()) == 30


def _decoded(raw: bytes) -> bytes:
    """A Redis value plus the base64 bodies of the kombu messages in it."""
    out = [raw]
    for chunk in raw.split(b"\n"):
        try:
            message = json.loads(chunk)
        except ValueError:
            continue
        body = message.get("body") if isinstance(message, dict) else None
        if isinstance(body, str):
            out.append(base64.b64decode(body + "==="))
    return b"\n".join(out)


def test_the_key_is_in_no_log_no_table_and_no_redis_key(deployment: Deployment) -> None:
    key = deployment.api_key
    logs = deployment.every_log()
    task_logs = [p for p in logs if "dag_id=" in str(p)]
    assert len(task_logs) >= 2 * BATCHES, "the scan would miss the task logs"
    leaking = [str(p) for p in logs if key in p.read_text(errors="replace")]
    assert not leaking, leaking

    dump = deployment.postgres.dump()
    assert "mka1_default" in dump and "COPY public.trigger" in dump, "the dump misses tables"
    assert key not in dump and key.encode().hex() not in dump

    values = deployment.redis.every_value()
    assert values, "Redis holds no key at all: the scan looked nowhere"
    assert not [name for name, raw in values if key.encode() in _decoded(raw)]
    report(
        f"leak scan: the key is in none of {len(logs)} log files ({len(task_logs)} task logs), "
        f"the {len(dump) // 1024} KiB pg_dump, or the {len(values)} Redis keys"
    )
    report(f"distributed scenario: {time.monotonic() - STARTED:.0f} s in all (deployment start included)")
