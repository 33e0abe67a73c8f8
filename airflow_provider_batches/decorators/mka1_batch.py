"""
The ``@task.mka1_batch`` TaskFlow decorator: the decorated function returns the requests of a
:class:`~airflow_provider_batches.operators.mka1_job.MKA1BatchJobOperator` job, which runs them. It only
stages what the function returns; the job decides everything else.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import (
    SET_DURING_EXECUTION,
    DecoratedOperator,
    ObjectStoragePath,
    TaskDecorator,
    context_merge,
    determine_kwargs,
    task_decorator_factory,
)

from airflow_provider_batches.exceptions import MKA1InvalidInputError
from airflow_provider_batches.hooks.mka1 import idempotency_key_for
from airflow_provider_batches.jobs.inputs import iter_request_lines
from airflow_provider_batches.jobs.merge import AtomicFile, resolve_dir
from airflow_provider_batches.operators.mka1_job import MKA1BatchJobOperator

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

REQUESTS_FILE = "requests-{key}.jsonl"
XCOM_REQUESTS = "requests_path"


class MKA1BatchDecoratedOperator(DecoratedOperator, MKA1BatchJobOperator):
    """
    Runs the decorated function once, then the job on the requests it returned.

    What the function may return: the path of a JSONL file of request lines (a ``str``, a path or an
    ``ObjectStoragePath``), or an iterable of prompt strings (with ``model=``) or request dicts (a
    generator is fine). An iterable is streamed, line by line, to ``requests-<key>.jsonl`` in
    ``result_path`` (written atomically; ``<key>`` is the task instance's idempotency key), so it is
    never held in memory, and a deferred task resumed on another worker, or a retry, reads that file.
    A resumed task never calls the function again: it reads the requests' path from the XCom
    ``requests_path``, pushed before the job starts.

    :param python_callable: the function returning the requests.
    :param op_args: its positional arguments.
    :param op_kwargs: its keyword arguments.
    """

    template_fields: Sequence[str] = tuple(
        f
        for f in (*DecoratedOperator.template_fields, *MKA1BatchJobOperator.template_fields)
        if f != "requests"
    )
    template_fields_renderers = {
        **DecoratedOperator.template_fields_renderers,
        **MKA1BatchJobOperator.template_fields_renderers,
    }
    custom_operator_name = "@task.mka1_batch"

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        op_args: Collection[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            python_callable=python_callable,
            op_args=op_args,
            op_kwargs=op_kwargs,
            requests=SET_DURING_EXECUTION,
            **kwargs,
        )

    def execute(self, context: Context) -> Any:
        """
        Call the function (with ``op_args``, ``op_kwargs`` and the context values it names), stage what it
        returned as the job's ``requests``, push their path as the ``requests_path`` XCom, then run the job
        (:meth:`~airflow_provider_batches.operators.mka1_job.MKA1BatchJobOperator.execute`).

        :return: the job's manifest (deferred: :meth:`execute_complete` returns it).
        :raises MKA1InvalidInputError: the function returned neither a path nor an iterable of requests, no
            request at all, a request line that is not valid, or prompt strings without ``model``; nothing
            was sent.
        """
        context_merge(context, self.op_kwargs)
        kwargs = determine_kwargs(self.python_callable, self.op_args, context)
        self.requests = self._stage(self.python_callable(*self.op_args, **kwargs), context)
        context["ti"].xcom_push(key=XCOM_REQUESTS, value=str(self.requests))
        return MKA1BatchJobOperator.execute(self, context)

    def execute_complete(
        self,
        context: Context,
        event: dict[str, Any] | None,
        deadline: float | None = None,
        started: float = 0.0,
    ) -> dict[str, Any]:
        """
        Go on with the job after its trigger fired, on the requests the first run staged (their path read back
        from the ``requests_path`` XCom): the function is never called again.

        :param event: the trigger's event.
        :param deadline: the job's absolute deadline, in Unix seconds, from the deferral.
        :param started: when the job started, in Unix seconds, from the deferral.
        :return: the job's manifest.
        :raises MKA1InvalidInputError: the ``requests_path`` XCom is missing.
        """
        # Resumed: the requests the first run staged, never a second call of the function. An XCom, not
        # the deferral's kwargs, which `airflow dags test` drops.
        ti = context["ti"]
        self.requests = ti.xcom_pull(task_ids=ti.task_id, key=XCOM_REQUESTS, map_indexes=ti.map_index)
        if not self.requests:
            raise MKA1InvalidInputError(f"@task.mka1_batch {self.task_id!r} resumed without its requests.")
        return MKA1BatchJobOperator.execute_complete(self, context, event, deadline, started)

    def _stage(self, returned: Any, context: Context) -> Any:
        """What the job reads: a returned path as it is, anything else streamed to the requests file."""
        if isinstance(returned, (str, os.PathLike, ObjectStoragePath)):
            return returned
        if isinstance(returned, (bytes, Mapping)) or not isinstance(returned, Iterable):
            raise MKA1InvalidInputError(
                f"@task.mka1_batch {self.task_id!r}: the function returned a {type(returned).__name__}; "
                "return the path of a JSONL file, or a list or generator of prompt strings or request "
                "dicts (a single prompt as a list of one)."
            )
        name = REQUESTS_FILE.format(key=idempotency_key_for(context))
        out = AtomicFile(resolve_dir(self.result_path), name)
        count = 0
        try:
            lines = iter_request_lines(
                self._prompts_need_model(returned),
                self.endpoint,
                model=self.model,
                system_prompt=self.system_prompt,
                request_params=self.prompt_request_params(),
            )
            for count, raw, _ in lines:  # noqa: B007 - the last line number is the count
                out.file.write(raw)
            if not count:
                raise MKA1InvalidInputError(
                    f"@task.mka1_batch {self.task_id!r}: the function returned no requests."
                )
            out.commit()
        except BaseException:
            out.abort()
            raise
        self.log.info("Staged %d requests from the function in %s.", count, out.target)
        return out.target

    def _prompts_need_model(self, items: Iterable[Any]) -> Iterator[Any]:
        for item in items:
            if isinstance(item, str) and not self.model:
                raise MKA1InvalidInputError(
                    f"@task.mka1_batch {self.task_id!r}: the function returned prompt strings, which need "
                    "model= (the model every request is sent to)."
                )
            yield item


def mka1_batch_task(python_callable: Callable[..., Any] | None = None, **kwargs: Any) -> TaskDecorator:
    """
    ``@task.mka1_batch(endpoint=..., result_path=..., ...)``: every parameter of
    :class:`~airflow_provider_batches.operators.mka1_job.MKA1BatchJobOperator` but ``requests``, which
    the function returns; the task's result is the job's manifest.

    :param python_callable: the function to decorate.
    """
    return task_decorator_factory(
        python_callable=python_callable,
        decorated_operator_class=MKA1BatchDecoratedOperator,
        **kwargs,
    )
