"""Which LLM backends exist and whether they can answer (used by /ready)."""

from __future__ import annotations

from typing import Any

import httpx
from django.conf import settings


async def llm_readiness() -> dict[str, Any]:
    """Ollama reachable with the model pulled, or Groq configured: at least one must hold."""
    ollama: dict[str, Any] = {"url": settings.OLLAMA_URL, "model": settings.OLLAMA_MODEL}
    try:
        async with httpx.AsyncClient(timeout=2.0) as client:
            response = await client.get(f"{settings.OLLAMA_URL}/api/tags")
            response.raise_for_status()
            names = {m.get("name") for m in response.json().get("models", [])} | {
                m.get("model") for m in response.json().get("models", [])
            }
        wanted = settings.OLLAMA_MODEL
        ollama["ok"] = wanted in names or f"{wanted}:latest" in names
        if not ollama["ok"]:
            ollama["error"] = f"model {wanted} is not pulled: run `ollama pull {wanted}`"
    except (httpx.HTTPError, ValueError) as exc:
        ollama.update(ok=False, error=f"Ollama unreachable at {settings.OLLAMA_URL}: {type(exc).__name__}")
    groq = {"ok": bool(settings.GROQ_API_KEY), "model": settings.GROQ_MODEL}
    if not groq["ok"]:
        groq["error"] = "GROQ_API_KEY is not set"
    return {"ok": ollama["ok"] or groq["ok"], "ollama": ollama, "groq": groq}
