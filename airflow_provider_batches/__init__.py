"""Apache Airflow provider for the MKA1 LLM gateway's Batch API."""

from __future__ import annotations

__version__ = "0.1.0"
