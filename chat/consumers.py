"""/ws/chat consumer (being built: authentication and ping only so far)."""

from __future__ import annotations

from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer


class ChatConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        await self.accept()
        error = self.scope.get("auth_error")
        if error:
            await self.send_json({"type": "error", "code": error, "message": "Authentication failed."})
            await self.close(code=4403 if error == "origin_not_allowed" else 4401)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json({"type": "pong"})
