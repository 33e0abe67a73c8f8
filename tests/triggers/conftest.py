"""Fixtures of the trigger tests: the task instance the triggerer sets on a trigger, and the state its
supervisor answers for it."""

from __future__ import annotations

import uuid
from typing import TypeVar

import pytest
from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_3_PLUS
from airflow.triggers.base import BaseTrigger

T = TypeVar("T", bound=BaseTrigger)

needs_on_kill = pytest.mark.skipif(not AIRFLOW_V_3_3_PLUS, reason="the triggerer calls on_kill from 3.3")


class SupervisorComms:
    """
    The triggerer's supervisor, for ``RuntimeTaskInstance.get_task_states`` only: it answers with the
    states the API server would hold (the real one needs a running triggerer and API server).
    """

    def __init__(self, task_states: dict[str, dict[str, str | None]] | Exception) -> None:
        self.task_states = task_states
        self.asked: list[object] = []

    def send(self, msg: object) -> object:
        from airflow.sdk.execution_time.comms import GetTaskStates, MaskSecret, TaskStatesResult

        if isinstance(msg, MaskSecret):  # the SDK masks the API key through the supervisor too
            return None
        assert isinstance(msg, GetTaskStates), msg
        self.asked.append(msg)
        if isinstance(self.task_states, Exception):
            raise self.task_states
        return TaskStatesResult(task_states=self.task_states)


def deferred_on(trigger: T, *, map_index: int = -1) -> T:
    """Give ``trigger`` the task instance the triggerer sets on it: ``mka1_dag.wait`` in ``run_1``."""
    from airflow.executors.workloads.task import TaskInstanceDTO

    trigger.task_instance = TaskInstanceDTO(  # type: ignore[assignment]
        id=uuid.uuid4(),
        dag_id="mka1_dag",
        task_id="wait",
        run_id="run_1",
        try_number=1,
        map_index=map_index,
        dag_version_id=uuid.uuid4(),
        pool_slots=1,
        priority_weight=1,
    )
    return trigger


@pytest.fixture
def supervisor(monkeypatch):
    """Install the supervisor's answers: ``supervisor({"run_1": {"wait_3": "failed"}})``."""

    def install(task_states: dict[str, dict[str, str | None]] | Exception) -> SupervisorComms:
        from airflow.sdk.execution_time import task_runner

        comms = SupervisorComms(task_states)
        monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", comms, raising=False)
        return comms

    return install
