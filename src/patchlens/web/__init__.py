"""``patchlens serve``: an interactive web explorer (needs the ``web`` extra: FastAPI and uvicorn)."""

from __future__ import annotations

from typing import Any

__all__ = ["create_app", "WebConfig"]


def __getattr__(name: str) -> Any:
    # FastAPI is optional: import it only when the app is asked for.
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "WebConfig":
        from .state import WebConfig

        return WebConfig
    raise AttributeError(name)
