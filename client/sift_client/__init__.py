"""sift_client: the Python client of Sift's HTTP API (CONTRACT.md, "Python client"). No Django needed."""

from __future__ import annotations

from sift_client.client import Client, SiftError

__all__ = ["Client", "SiftError"]
__version__ = "0.1.0"
