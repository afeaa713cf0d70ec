"""Fn's HTTP API on the LB node: v2 CRUD, invoke and HTTP triggers (`make_app`)."""

from fn_core.api.server import make_app

__all__ = ["make_app"]
