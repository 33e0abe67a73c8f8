"""The decorator tests run on an emulator of their own."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="package")
def emulator_session():
    """Their batches and files must not lengthen the listings later tests of the shared emulator count."""
    from airflow_provider_batches.emulator import run_emulator
    from tests.conftest import API_KEY, FAST_TIMINGS, OTHER_API_KEY

    with run_emulator(api_keys=(API_KEY, OTHER_API_KEY), **FAST_TIMINGS) as emu:
        yield emu
