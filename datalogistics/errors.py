"""Errors of the ``datalogistics`` package."""

from __future__ import annotations


class DataLogisticsError(Exception):
    """Root of the errors raised by the ``datalogistics`` package."""
