"""Hooks of the MKA1 provider."""

from __future__ import annotations
