"""
The browser demo page (``web_demo/``), served by the signaling server.

``GET /`` is ``index.html``; ``GET /NAME`` is any other file directly in the
folder (no subfolders, no dot-files). The page then opens ``/ws`` on the same
host, so one address serves both the page and its signaling.

Only regular files are served: a symlink is refused even when it points
inside the folder (a link to ``/etc/passwd`` in the folder was once served),
and so is anything that is not a plain file. Names are at most
:data:`MAX_NAME` characters, so a very long one is a 404, not a failing
``stat`` (it once gave a 500 with a traceback).
"""

from __future__ import annotations

import stat
from pathlib import Path

from aiohttp import web

__all__ = ["DEFAULT_ROOT", "MAX_NAME", "add_web_demo"]

#: Longest file name served (most file systems allow 255 bytes).
MAX_NAME = 255

#: The page shipped with the project (beside the ``signaling_server`` package).
DEFAULT_ROOT = Path(__file__).resolve().parent.parent / "web_demo"


def add_web_demo(app: web.Application, root: Path) -> None:
    """Serve the files of ``root`` at ``/`` (after the other routes, which take precedence)."""
    root = root.resolve()

    async def page(request: web.Request) -> web.StreamResponse:
        name = request.match_info.get("name") or "index.html"
        path = root / name
        try:
            info = path.lstat()  # the link itself, never what it points to
        except (OSError, ValueError):
            info = None
        if name.startswith(".") or path.parent != root or info is None or not stat.S_ISREG(info.st_mode):
            raise web.HTTPNotFound(text=f"no such file in the demo page: {name[:64]}\n")
        # Always revalidated: an edited page shows on reload.
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    app.router.add_get("/", page)
    app.router.add_get(rf"/{{name:[A-Za-z0-9_][A-Za-z0-9_.-]{{0,{MAX_NAME - 1}}}}}", page)
