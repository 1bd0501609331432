"""capabilities (3009): discovered methods and their activation, kept in a SQLite database.

    GET  /api/v1/capabilities/status                    discovered and active, in total and per category
    GET  /api/v1/capabilities/discovered[?category=C]   every method (or one category's)
    POST /api/v1/capabilities/activate    {"name"}      activates a method; 404 for an unknown name
    POST /api/v1/capabilities/deactivate  {"name"}      deactivates it

    $ curl -s -X POST localhost:3009/api/v1/capabilities/activate -d '{"name": "semantic-search"}'
    {"ok": true, "method": {"name": "semantic-search", "category": "retrieval", "description": "...",
     "active": true, "activatedAt": 1731587400.5, "activations": 1}, "changed": true, "traceId": "..."}

The database lives in the state directory (`capabilities.db` by default) and is reached
through the service's connection pool, each statement in a worker thread so sqlite never
blocks the event loop. Start-up adds the built-in methods without
touching existing rows, so activation survives a restart. `activations` counts the times
a method went from inactive to active: activating an active method changes nothing.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from tooloo_cli.services.http import ApiError, Field, check_field, ok, read_json
from tooloo_cli.services.service import Service, build_app

# (name, category, description): what discovery finds in this offline stack.
DISCOVERED_METHODS: tuple[tuple[str, str, str], ...] = (
    ("sentiment-analysis", "analysis", "Scores the tone of a text from -1 to 1"),
    ("topic-segmentation", "analysis", "Splits a conversation into topic segments"),
    ("trend-detection", "analysis", "Finds rising and falling series in metrics"),
    ("summarization", "generation", "Condenses a document into a few sentences"),
    ("code-generation", "generation", "Writes a function from a description"),
    ("test-generation", "generation", "Writes unit tests for a function"),
    ("semantic-search", "retrieval", "Finds passages by meaning rather than keywords"),
    ("keyword-search", "retrieval", "Finds passages containing given words"),
    ("document-ranking", "retrieval", "Orders candidate documents by relevance"),
    ("answer-grading", "evaluation", "Grades an answer against a reference"),
    ("regression-check", "evaluation", "Compares results with a saved baseline"),
    ("latency-benchmark", "evaluation", "Measures response times under load"),
)
CATEGORIES = tuple(dict.fromkeys(category for _, category, _ in DISCOVERED_METHODS))

SCHEMA = """
CREATE TABLE IF NOT EXISTS methods (
    name TEXT PRIMARY KEY,
    category TEXT,
    description TEXT,
    active INTEGER NOT NULL DEFAULT 0,
    activated_at REAL,
    activations INTEGER NOT NULL DEFAULT 0
)
"""
COLUMNS = "name, category, description, active, activated_at, activations"


def method_document(row: tuple[Any, ...]) -> dict[str, Any]:
    name, category, description, active, activated_at, activations = row
    return {"name": name, "category": category, "description": description, "active": bool(active),
            "activatedAt": activated_at, "activations": activations}


# -- statements, run in a worker thread on a pooled connection -----------------------------


def create_schema(db: sqlite3.Connection) -> None:
    db.execute(SCHEMA)
    db.executemany("INSERT OR IGNORE INTO methods (name, category, description) VALUES (?, ?, ?)",
                   DISCOVERED_METHODS)


def select_methods(db: sqlite3.Connection, category: str | None) -> list[dict[str, Any]]:
    query = f"SELECT {COLUMNS} FROM methods"
    parameters: tuple[str, ...] = ()
    if category is not None:
        query += " WHERE category = ?"
        parameters = (category,)
    return [method_document(row) for row in db.execute(query + " ORDER BY category, name", parameters)]


def count_by_category(db: sqlite3.Connection) -> dict[str, dict[str, int]]:
    rows = db.execute("SELECT category, COUNT(*), SUM(active) FROM methods GROUP BY category ORDER BY category")
    return {category: {"discovered": discovered, "active": active or 0} for category, discovered, active in rows}


def set_active(db: sqlite3.Connection, name: str, active: bool) -> tuple[dict[str, Any], bool] | None:
    """The method after the change and whether it changed; None when there is no such method."""
    if active:
        cursor = db.execute("UPDATE methods SET active = 1, activated_at = ?, activations = activations + 1 "
                            "WHERE name = ? AND active = 0", (time.time(), name))
    else:
        cursor = db.execute("UPDATE methods SET active = 0, activated_at = NULL WHERE name = ? AND active = 1",
                            (name,))
    row = db.execute(f"SELECT {COLUMNS} FROM methods WHERE name = ?", (name,)).fetchone()
    return None if row is None else (method_document(row), cursor.rowcount > 0)


def create(service: Service) -> ASGIApp:
    pool = service.pool
    if pool is None:
        raise RuntimeError("the capabilities service needs its [services.capabilities.pool] settings")

    async def prepare_database() -> None:
        await pool.run(create_schema)

    service.on_startup(prepare_database)
    max_body = service.stack.max_body_bytes

    async def status(request: Request) -> Response:
        by_category = await pool.run(count_by_category)
        return ok({"discovered": sum(c["discovered"] for c in by_category.values()),
                   "active": sum(c["active"] for c in by_category.values()),
                   "byCategory": by_category}, request)

    async def discovered(request: Request) -> Response:
        category = request.query_params.get("category")
        if category is not None:
            check_field("category", category, Field(str, choices=CATEGORIES))
        return ok({"methods": await pool.run(select_methods, category)}, request)

    def toggle(active: bool) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            body = await read_json(request, {"name": Field(str)}, limit=max_body)
            with service.tracer.span("activate" if active else "deactivate"):
                outcome = await pool.run(set_active, body["name"], active)
            if outcome is None:
                raise ApiError(404, f"unknown method {body['name']!r}", name=body["name"])
            method, changed = outcome
            return ok({"method": method, "changed": changed}, request)

        return endpoint

    return build_app(service, [
        Route("/api/v1/capabilities/status", status),
        Route("/api/v1/capabilities/discovered", discovered),
        Route("/api/v1/capabilities/activate", toggle(True), methods=["POST"]),
        Route("/api/v1/capabilities/deactivate", toggle(False), methods=["POST"]),
    ])
