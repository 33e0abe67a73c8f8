"""A faithful local emulator of the MKA1 Batch and Files API, for demos and tests.

Needs the ``emulator`` extra (FastAPI, uvicorn, python-multipart) to run; :class:`EmulatorAdmin` and
:class:`EmulatorSettings` import without it. Never imports Airflow.
"""

from __future__ import annotations

from airflow_provider_batches.emulator.admin import EmulatorAdmin, EmulatorAdminError
from airflow_provider_batches.emulator.server import EmulatorHandle, EmulatorServer, run_emulator
from airflow_provider_batches.emulator.settings import EmulatorSettings

__all__ = [
    "EmulatorAdmin",
    "EmulatorAdminError",
    "EmulatorHandle",
    "EmulatorServer",
    "EmulatorSettings",
    "run_emulator",
]
