"""
The browser demo page (``web_demo/``), served by the signaling server.

``GET /`` is ``index.html``; ``GET /NAME`` is any other file directly in the
folder (no subfolders, no dot-files). The page then opens ``/ws`` on the same
host, so one address serves both the page and its signaling.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

__all__ = ["DEFAULT_ROOT", "add_web_demo"]

#: The page shipped with the project (beside the ``signaling_server`` package).
DEFAULT_ROOT = Path(__file__).resolve().parent.parent / "web_demo"


def add_web_demo(app: web.Application, root: Path) -> None:
    """Serve the files of ``root`` at ``/`` (after the other routes, which take precedence)."""
    root = root.resolve()

    async def page(request: web.Request) -> web.StreamResponse:
        name = request.match_info.get("name") or "index.html"
        path = root / name
        if name.startswith(".") or path.parent != root or not path.is_file():
            raise web.HTTPNotFound(text=f"no such file in the demo page: {name}\n")
        # Always revalidated: an edited page shows on reload.
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    app.router.add_get("/", page)
    app.router.add_get(r"/{name:[A-Za-z0-9_][A-Za-z0-9_.-]*}", page)
