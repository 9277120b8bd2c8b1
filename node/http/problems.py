"""`/problems/<type>`: a short page for each problem type the node answers with.

Problem bodies name their type as `/problems/<slug>` (node/base/errors.py), a path every node
serves, so a type is a stable URI the project controls. The types are read from the error
classes themselves (every CountersError subclass the node has imported), plus the few the
edge middleware sets on aiohttp's own HTTP errors, so a new error class gets its page
without a list to keep in step.
"""

from __future__ import annotations

import html
import inspect

from aiohttp import web

from node.base.errors import TYPE_BASE, ClientError, CountersError, NotFound, ServerError
from node.http import bodies

routes = web.RouteTableDef()

# Types the edge middleware gives aiohttp's HTTP errors (middleware.problem_for).
MIDDLEWARE_TYPES = {
    "method-not-allowed": (405, "Method not allowed", "The path does not take this method."),
    "too-large": (413, "Request body too large", "The body is over the node's 1 MiB limit."),
}
CLIENT_NOTE = "A client mistake: nothing was changed. Fix the request before sending it again."
SERVER_NOTE = (
    "A peer or store fault. `may_have_applied` in the body says whether the operation may "
    "still apply; retrying a write with the same Idempotency-Key is the safe way to find out."
)


def _classes(root: type[CountersError]) -> list[type[CountersError]]:
    found = [root]
    for sub in root.__subclasses__():
        found += _classes(sub)
    return found


def catalogue() -> dict[str, tuple[int, str, str]]:
    """slug -> (status, title, description) for every problem type the node can answer."""
    types: dict[str, tuple[int, str, str]] = {}
    for cls in _classes(CountersError):
        if cls.type in types:
            continue  # a subclass that keeps its parent's type (PeerUnreachable)
        own_doc = cls.__dict__.get("__doc__")
        text = inspect.cleandoc(own_doc) if own_doc else ""
        note = CLIENT_NOTE if issubclass(cls, ClientError) else ""
        if issubclass(cls, ServerError):
            note = SERVER_NOTE
        types[cls.type] = (cls.status, cls.title, " ".join(part for part in (text, note) if part))
    for slug, entry in MIDDLEWARE_TYPES.items():
        types.setdefault(slug, (entry[0], entry[1], f"{entry[2]} {CLIENT_NOTE}"))
    return types


@routes.get("/problems")
async def problem_index(request: web.Request) -> web.Response:
    types = catalogue()
    listed = [
        {"type": TYPE_BASE + slug, "status": status, "title": title}
        for slug, (status, title, _) in sorted(types.items())
    ]
    return bodies.json_response({"problems": listed})


@routes.get("/problems/{slug}")
async def problem_page(request: web.Request) -> web.Response:
    slug = request.match_info["slug"]
    entry = catalogue().get(slug)
    if entry is None:
        raise NotFound(f"no problem type {slug!r}; GET /problems lists them")
    status, title, description = entry
    page = (
        f"<!doctype html><title>{html.escape(title)}</title>"
        f"<h1>{html.escape(title)}</h1><p>HTTP {status}, type <code>{TYPE_BASE}"
        f"{html.escape(slug)}</code></p><p>{html.escape(description)}</p>"
    )
    return web.Response(text=page, content_type="text/html")
