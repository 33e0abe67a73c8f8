"""The adapter tests need common-ai (the ``[common-ai]`` extra, in ``dev``): without it they are skipped."""

from __future__ import annotations

import pytest

pytest.importorskip("airflow.providers.common.ai.batch.base", reason="needs the [common-ai] extra")


@pytest.fixture(scope="package")
def emulator_session():
    """An emulator of these tests' own: their batches and files must not lengthen the listings that
    later tests of the shared emulator count."""
    from airflow_provider_batches.emulator import run_emulator
    from tests.conftest import API_KEY, FAST_TIMINGS, OTHER_API_KEY

    with run_emulator(api_keys=(API_KEY, OTHER_API_KEY), **FAST_TIMINGS) as emu:
        yield emu
