"""
OpenLineage for the MKA1 operators: the datasets of a batch (its input file or path, its results) and
:class:`MKA1BatchRunFacet` (batch ids, request counts, token usage where known). Only an operator's
``get_openlineage_facets_on_complete`` imports it, and only when ``apache-airflow-providers-openlineage``
is installed (it imports that provider at its top); it never calls the API.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import attr
from airflow.providers.common.compat.openlineage.facet import Dataset, RunFacet
from airflow.providers.openlineage.extractors import OperatorLineage

RUN_FACET = "mka1_batch"


@attr.define
class MKA1BatchRunFacet(RunFacet):
    """
    What one task did on the MKA1 Batch API.

    :ivar batch_ids: the batches the task created or attached to.
    :ivar endpoint: the API every request line called.
    :ivar request_counts: ``total``, ``completed`` and ``failed`` (summed over ``batch_ids``).
    :ivar usage: token counts summed over the results (``input_tokens``, ``output_tokens``), when read.
    """

    batch_ids: list[str]
    endpoint: str | None = attr.field(default=None)
    request_counts: dict[str, int] | None = attr.field(default=None)
    usage: dict[str, int] | None = attr.field(default=None)


def path_dataset(path: str | os.PathLike[str] | Any) -> Dataset:
    """
    The dataset of a local path or an object storage path (``ObjectStoragePath`` or URL), named as
    OpenLineage names files: namespace ``scheme://bucket``, name the key; a local file is ``file``.

    :param path: a local path, an ``ObjectStoragePath`` or a URL.
    """
    text = str(path)
    parts = urlsplit(text)
    if parts.scheme and parts.scheme != "file" and len(parts.scheme) > 1:  # not a Windows drive
        return Dataset(namespace=f"{parts.scheme}://{parts.netloc}", name=parts.path.lstrip("/") or "/")
    local = parts.path if parts.scheme == "file" else text
    return Dataset(namespace="file", name=os.path.abspath(local))


def file_dataset(base_url: str, file_id: str) -> Dataset:
    """
    An MKA1 file as a dataset: namespace the API's base URL, name ``files/<id>``.

    :param base_url: e.g. ``https://apigw.mka1.com``.
    :param file_id: the file's id.
    """
    return Dataset(namespace=base_url, name=f"files/{file_id}")


def lineage(
    *,
    inputs: Sequence[Dataset],
    outputs: Sequence[Dataset],
    batch_ids: Sequence[str] = (),
    endpoint: str | None = None,
    request_counts: Mapping[str, int] | None = None,
    usage: Mapping[str, int] | None = None,
) -> OperatorLineage:
    """
    The ``OperatorLineage`` of a task: its datasets, and the run facet when it touched a batch.

    :param inputs: what it read.
    :param outputs: what it wrote.
    :param batch_ids: the batches; none: no run facet.
    """
    run_facets: dict[str, Any] = {}
    if batch_ids:
        run_facets[RUN_FACET] = MKA1BatchRunFacet(
            batch_ids=list(batch_ids),
            endpoint=endpoint,
            request_counts=dict(request_counts) if request_counts is not None else None,
            usage=dict(usage) if usage is not None else None,
        )
    return OperatorLineage(inputs=list(inputs), outputs=list(outputs), run_facets=run_facets)
