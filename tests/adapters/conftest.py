"""The adapter tests need common-ai (the ``[common-ai]`` extra, in ``dev``): without it they are skipped."""

from __future__ import annotations

import pytest

pytest.importorskip("airflow.providers.common.ai.batch.base", reason="needs the [common-ai] extra")
