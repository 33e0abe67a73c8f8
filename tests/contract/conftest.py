"""Fixtures of the contract tests: the vendor SDK pointed at the shared emulator, one end user per test."""

from __future__ import annotations

import pytest
from meetkai_mka1 import SDK
from sdk_helpers import end_user, new_sdk

from tests.conftest import API_KEY, OTHER_API_KEY


@pytest.fixture
def sdk(emulator) -> SDK:
    return new_sdk(emulator.base_url, API_KEY)


@pytest.fixture
def other_key_sdk(emulator) -> SDK:
    return new_sdk(emulator.base_url, OTHER_API_KEY)


@pytest.fixture
def obo() -> str:
    """A fresh X-On-Behalf-Of: what a test creates is invisible to every other test."""
    return end_user()
