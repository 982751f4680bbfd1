"""REST endpoints of the chat app (mounted under /api/v1/)."""

from ninja import Router

router = Router(tags=["chat"])
