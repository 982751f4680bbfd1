"""REST endpoints of the metrics app (mounted under /api/v1/)."""

from ninja import Router

router = Router(tags=["metrics"])
