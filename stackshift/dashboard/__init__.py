"""The web dashboard (``pip install 'stackshift[dashboard]'``).

``create_app(app)`` returns an ASGI app to serve (``stackshift dashboard``) or to
mount in a FastAPI/Starlette app: ``api.mount("/jobs", create_app(app))``.

The names are imported on first use, so that ``stackshift.dashboard.cli`` (which
the ``stackshift`` command imports) loads without the extra installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app
    from .data import DashboardData

__all__ = ["DashboardData", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "DashboardData":
        from .data import DashboardData

        return DashboardData
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
