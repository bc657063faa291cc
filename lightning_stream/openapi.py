"""The OpenAPI 3.0 document of the REST routes, served at ``/api/openapi.json``.

Written by hand (five routes) and kept honest by the fuzz test, which runs
``schemathesis`` from this very document against a live server and checks every
answer against the schemas below. The streaming routes (``/stream``, ``/ws``)
are described in the SPEC and their module docstrings; OpenAPI cannot express them.
"""

from __future__ import annotations

from typing import Any

from lightning_stream._version import __version__
from lightning_stream.globs import MAX_GLOB_LEN
from lightning_stream.params import MAX_LIMIT
from lightning_stream.seriesapi import MAX_TAGS

#: a float on the wire: a JSON number, or TensorBoard's strings for values JSON cannot hold
FLOAT = {"anyOf": [{"type": "number"}, {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]}]}

#: what ``globs.validate_glob`` accepts: no control characters, every '[' set closed by a ']' (a ']' right
#: after '[' or '[!' is literal). A lone ']' is written as the range ``[\]-\]]``: schemathesis re-serialises
#: patterns and turns an escaped ``\]`` outside a class into a bare ``]``, which is not a valid regex.
_CTRL = r"\x00-\x1f\x7f"
_CLOSE = r"[\]-\]]"
GLOB_PATTERN = (
    rf"^(?:[^\[{_CTRL}]|\[(?:!(?:{_CLOSE}[^\]{_CTRL}]*|[^\]{_CTRL}]+)|{_CLOSE}[^\]{_CTRL}]*|[^\]!{_CTRL}][^\]{_CTRL}]*)"
    rf"{_CLOSE})*$"
)

INT64 = {"type": "integer", "format": "int64"}

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string", "description": "what was wrong and what to send instead"}},
}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    """An optional query parameter."""
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def openapi_document(*, token: bool = False) -> dict[str, Any]:
    """The document; with ``token`` the API routes declare bearer authentication."""
    security: list[dict[str, list[str]]] = [{"bearer": []}, {"query_token": []}] if token else []
    unauthorized = {"401": _error("missing or wrong token")} if token else {}
    name_param = {"type": "string", "minLength": 1}
    glob_param = {"type": "string", "minLength": 1, "maxLength": MAX_GLOB_LEN, "pattern": GLOB_PATTERN}
    doc: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {
            "title": "lightning-stream",
            "version": __version__,
            "description": (
                "Live TensorBoard scalars of PyTorch Lightning runs. Streaming: GET /stream (SSE), GET /ws; "
                "both take format=columns (query on /stream, a subscribe field on /ws) for one "
                '{"run","tag","steps","wall_times","values"} entry per series instead of point objects.'
            ),
        },
        "paths": {
            "/health": {
                "get": {
                    "operationId": "health",
                    "summary": "Liveness and load; never needs a token.",
                    "security": [],
                    "responses": {"200": _json("the server is up", {"$ref": "#/components/schemas/Health"})},
                }
            },
            "/api/runs": {
                "get": {
                    "operationId": "runs",
                    "summary": "Runs with their tags and last step.",
                    "responses": {
                        "200": _json("all runs", {"type": "array", "items": {"$ref": "#/components/schemas/Run"}}),
                        **unauthorized,
                    },
                }
            },
            "/api/scalars": {
                "get": {
                    "operationId": "scalars",
                    "summary": "Points of one series in step order; load this, then stream with since=seq.",
                    "parameters": [
                        {"name": "run", "in": "query", "required": True, "schema": name_param},
                        {"name": "tag", "in": "query", "required": True, "schema": name_param},
                        {
                            "name": "since_step",
                            "in": "query",
                            "required": False,
                            "description": "only points with a larger step",
                            "schema": {"type": "integer", "format": "int64"},
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "description": "at most this many points (the first ones)",
                            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                        },
                    ],
                    "responses": {
                        "200": _json("the points", {"$ref": "#/components/schemas/Scalars"}),
                        "400": _error("a parameter is missing or malformed"),
                        "404": _error("unknown run or tag"),
                        **unauthorized,
                    },
                }
            },
            "/api/series": {
                "get": {
                    "operationId": "series",
                    "summary": "Many series in one columnar body, windowed and thinned; or streamed CSV rows.",
                    "description": (
                        "A glob that matches nothing is 200 with an empty list; an exact (glob-free) run that is "
                        "unknown, or an exact tag unknown in an exact run, is 404. Unknown parameters are 400."
                    ),
                    "parameters": [
                        _query("run", glob_param, "run name or fnmatch glob (default *)"),
                        {
                            **_query(
                                "tag",
                                {"type": "array", "items": glob_param, "maxItems": MAX_TAGS},
                                f"tag name or fnmatch glob (default *); repeat it (at most {MAX_TAGS} times) "
                                "for the union of what each matches",
                            ),
                            "style": "form",
                            "explode": True,
                        },
                        _query("start_step", INT64, "first step of the window (inclusive)"),
                        _query("end_step", INT64, "last step of the window (inclusive); not below start_step"),
                        _query(
                            "max_points",
                            {"type": "integer", "minimum": 2, "maximum": MAX_LIMIT},
                            "per series at most this many points: min/max per bucket, first and last kept",
                        ),
                        _query(
                            "format",
                            {"type": "string", "enum": ["json", "csv"]},
                            "json (default) or csv (streamed rows run,tag,step,wall_time,value)",
                        ),
                    ],
                    "responses": {
                        "200": {
                            "description": "the series (JSON), or CSV rows with a header",
                            "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/SeriesSet"}},
                                "text/csv": {"schema": {"type": "string"}},
                            },
                        },
                        "400": _error("a parameter is malformed or unknown, start_step > end_step, or too many tag="),
                        "404": _error("an exact run (or an exact tag of an exact run) is unknown"),
                        **unauthorized,
                    },
                }
            },
            "/api/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document.",
                    "responses": {"200": _json("OpenAPI 3.0 document", {"type": "object"}), **unauthorized},
                }
            },
        },
        "components": {
            "schemas": {
                "Error": _ERROR,
                "Health": {
                    "type": "object",
                    "required": [
                        "status",
                        "version",
                        "pid",
                        "uptime_s",
                        "runs",
                        "clients",
                        "events_total",
                        "loop_lag_ms",
                    ],
                    "properties": {
                        "status": {"type": "string", "enum": ["ok"]},
                        "version": {"type": "string"},
                        "pid": {"type": "integer"},
                        "uptime_s": {"type": "number", "minimum": 0},
                        "runs": {"type": "integer", "minimum": 0},
                        "clients": {
                            "type": "object",
                            "required": ["sse", "ws"],
                            "properties": {"sse": {"type": "integer"}, "ws": {"type": "integer"}},
                        },
                        "events_total": {"type": "integer", "minimum": 0},
                        "loop_lag_ms": {"type": "number", "minimum": 0},
                        "seq": {"type": "integer", "minimum": 0},
                    },
                },
                "Run": {
                    "type": "object",
                    "required": ["run", "logdir", "tags", "last_step", "last_wall_time"],
                    "properties": {
                        "run": {"type": "string"},
                        "logdir": {"type": "string", "nullable": True},
                        "tags": {"type": "array", "items": {"type": "string"}},
                        "last_step": {"type": "integer", "nullable": True},
                        "last_wall_time": {"type": "number", "nullable": True},
                        "hparams": {
                            "type": "object",
                            "description": "the hparams the run was started with (TensorBoard's hparams "
                            "plugin, e.g. save_hyperparameters()); {} when none",
                        },
                    },
                },
                "SeriesSet": {
                    "type": "object",
                    "required": ["seq", "series"],
                    "properties": {
                        "seq": {
                            "type": "integer",
                            "minimum": 0,
                            "description": "subscribe with since=seq to miss nothing",
                        },
                        "series": {"type": "array", "items": {"$ref": "#/components/schemas/Series"}},
                    },
                },
                "Series": {
                    "type": "object",
                    "required": ["run", "tag", "steps", "wall_times", "values", "decimated"],
                    "properties": {
                        "run": {"type": "string"},
                        "tag": {"type": "string"},
                        "steps": {"type": "array", "items": {"type": "integer"}},
                        "wall_times": {"type": "array", "items": FLOAT},
                        "values": {"type": "array", "items": FLOAT},
                        "decimated": {"type": "boolean", "description": "true when max_points thinned it"},
                    },
                },
                "Scalars": {
                    "type": "object",
                    "required": ["run", "tag", "points", "seq"],
                    "properties": {
                        "run": {"type": "string"},
                        "tag": {"type": "string"},
                        "seq": {
                            "type": "integer",
                            "minimum": 0,
                            "description": "subscribe with since=seq to miss nothing",
                        },
                        "points": {
                            "type": "array",
                            "items": {
                                "type": "array",
                                "minItems": 3,
                                "maxItems": 3,
                                "items": FLOAT,
                                "description": "[step, wall_time, value]",
                            },
                        },
                    },
                },
            },
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "query_token": {"type": "apiKey", "in": "query", "name": "token"},
            },
        },
        "x-glob-max-chars": MAX_GLOB_LEN,
    }
    if token:
        doc["security"] = security
    return doc
