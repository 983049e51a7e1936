"""GET /ui: the web dashboard, static files from service/ui/ (no build step, no server-side session).

The shell holds no data, so it needs no key; the page asks for the API key and sends it as a bearer
header on every data call. Only plain files directly inside service/ui/ with a known type are
served; every path is resolved and must stay in that folder.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from ..errors import ApiError

router = APIRouter(tags=["ui"], include_in_schema=False)

UI_DIR = (Path(__file__).resolve().parent.parent / "ui").resolve()

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}

# No inline script or style anywhere; images may be blob: (artifact PNGs fetched with the key).
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
       "connect-src 'self'; frame-src blob:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


def resolve_asset(name: str) -> Path | None:
    """The file for /ui/<name>, or None: unknown type, missing, or outside the ui folder."""
    if not name or "\\" in name or "\0" in name:
        return None
    try:
        path = (UI_DIR / name).resolve()
    except (OSError, ValueError):
        return None
    if path.parent != UI_DIR or path.suffix not in CONTENT_TYPES or not path.is_file():
        return None
    return path


def _serve(name: str) -> FileResponse:
    path = resolve_asset(name)
    if path is None:
        raise ApiError(404, f"no ui asset {name!r}", "not_found")
    return FileResponse(path, media_type=CONTENT_TYPES[path.suffix], headers=HEADERS)


@router.get("/ui")
@router.get("/ui/")
def index() -> FileResponse:
    return _serve("index.html")


@router.get("/ui/{asset:path}")
def asset(asset: str) -> FileResponse:
    return _serve(asset)
