"""The HTTP driving adapter: the ledger's use cases as JSON endpoints on FastAPI, served by uvicorn.

Like ``cli.py`` it consumes the use cases through the container and knows no adapter. The public
surface is :func:`create_app` (the app factory, whose lifespan starts and stops the container)
and :func:`serve` (uvicorn with a drain on SIGTERM: readiness fails at once, new requests are
refused with 503, requests in flight finish, then the container is disposed).
"""

from __future__ import annotations

from http_api.app import create_app
from http_api.lifecycle import Lifecycle, Phase
from http_api.server import serve

__all__ = ["Lifecycle", "Phase", "create_app", "serve"]
