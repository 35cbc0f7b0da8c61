"""The API documentation page at ``/docs``, served with its scripts from this machine.

FastAPI's own ``/docs`` loads Swagger UI from a CDN, so on an offline machine (or
behind a firewall) the page stayed blank. The ``web`` extra installs
``swagger-ui-bundle-v2`` (Swagger UI 5, which reads OpenAPI 3.1, in a Python package,
Apache-2.0 like Swagger UI itself); its files are served under
``/docs-assets``. Without it, ``/docs`` says where the schema is and what to install.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs-assets"


def swagger_assets() -> Any:
    """The folder of Swagger UI's files from ``swagger-ui-bundle``, or None when it is not installed."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        return None
    return swagger_ui_path


def add_docs(app: FastAPI) -> None:
    """``/docs`` for ``app`` (created with ``docs_url=None``), with no request leaving the machine."""
    folder = swagger_assets()
    if folder is not None:
        app.mount(ASSETS, StaticFiles(directory=str(folder)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        if folder is None:
            return HTMLResponse(
                "<!doctype html><title>patchlens API</title><p>The API schema is at "
                "<a href='/openapi.json'>/openapi.json</a>. For the interactive page, install Swagger UI's files: "
                "<code>pip install 'patchlens[web]'</code> (swagger-ui-bundle-v2).</p>"
            )
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url="/static/favicon.svg",
        )
