"""REST endpoints of the voice app (mounted under /api/v1/)."""

from ninja import Router

router = Router(tags=["voice"])
