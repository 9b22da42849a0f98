"""The one exception base class of the project."""

from __future__ import annotations


class UphooksError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigurationError(UphooksError):
    """A setting or a plugin is wrong; the message says which and how to fix it."""
