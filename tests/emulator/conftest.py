"""Each emulator test module gets its own emulator (``emu``, fast timings) and talks HTTP to it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from emulator_helpers import FAST, KEY, OTHER_KEY, Client

from airflow_provider_batches.emulator import EmulatorHandle, run_emulator


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorHandle]:
    with run_emulator(api_keys=(KEY, OTHER_KEY), **FAST) as handle:
        yield handle


@pytest.fixture
def api(emu: EmulatorHandle) -> Client:
    return Client(emu)


@pytest.fixture
def other_key(emu: EmulatorHandle) -> Client:
    return Client(emu, OTHER_KEY)


@pytest.fixture
def other_user(emu: EmulatorHandle) -> Client:
    return Client(emu, KEY, on_behalf_of="end-user-2")
