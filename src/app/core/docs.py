"""The interactive API docs (`/docs`, Swagger UI; `/redoc`, ReDoc), served from the package.

FastAPI's own pages load Swagger UI and ReDoc from a CDN: offline, or behind a strict
Content-Security-Policy, they are blank. Here the assets come from the `fastapi-offline` wheel
(Swagger UI 5 and ReDoc 2, kept current by its maintainers) and are served under
`/docs/assets/`, so the pages need no other host. Each page's CSP allows only this origin, and
its inline script by hash (no `'unsafe-inline'` for scripts).

`fastapi-offline` is imported by `install_docs` only: with the docs off (production) the API
process never loads it (`tests/unit/test_imports.py`).
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
ASSETS_URL = "/docs/assets"
DOCS_PAGES = frozenset({DOCS_URL, REDOC_URL, OAUTH2_REDIRECT_URL})

_INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", re.DOTALL)


def page_csp(html: str) -> str:
    """A CSP for one docs page: this origin only; its inline scripts by their sha256."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
        for script in _INLINE_SCRIPT.findall(html)
    )
    script_src = f"'self' {hashes}".strip()
    return (
        "default-src 'self'; "
        f"script-src {script_src}; "
        # Swagger UI and ReDoc set style attributes and inject <style> elements at run time.
        "style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; "
        "font-src 'self' data:; "
        "connect-src 'self'; "
        # ReDoc runs its search index in a Worker made from a blob: URL.
        "worker-src 'self' blob:; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


def _page(response: HTMLResponse) -> HTMLResponse:
    html = bytes(response.body).decode()
    return HTMLResponse(html, headers={"Content-Security-Policy": page_csp(html)})


def install_docs(app: FastAPI, *, openapi_url: str, swagger_ui_parameters: dict[str, Any]) -> None:
    """Add `/docs`, `/redoc`, Swagger's OAuth2 redirect page and their assets to `app`."""
    import fastapi_offline
    from fastapi.staticfiles import StaticFiles

    assets = Path(fastapi_offline.__file__).parent / "static"
    app.mount(ASSETS_URL, StaticFiles(directory=assets), name="docs-assets")

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return _page(
            get_swagger_ui_html(
                openapi_url=f"{root}{openapi_url}",
                title=f"{app.title} - Swagger UI",
                oauth2_redirect_url=f"{root}{OAUTH2_REDIRECT_URL}",
                swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
                swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
                swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
                swagger_ui_parameters=swagger_ui_parameters,
            )
        )

    @app.get(OAUTH2_REDIRECT_URL, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return _page(get_swagger_ui_oauth2_redirect_html())

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return _page(
            get_redoc_html(
                openapi_url=f"{root}{openapi_url}",
                title=f"{app.title} - ReDoc",
                redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
                redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
                with_google_fonts=False,
            )
        )
