"""Whether the LLM backends can answer (used by /ready)."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from chat.llm.ollama import ollama_readiness


async def llm_readiness() -> dict[str, Any]:
    """Ollama reachable with the model pulled, or Groq configured: at least one must hold."""
    ollama = await ollama_readiness()
    groq: dict[str, Any] = {"ok": bool(settings.GROQ_API_KEY), "model": settings.GROQ_MODEL}
    if not groq["ok"]:
        groq["error"] = "GROQ_API_KEY is not set"
    return {"ok": ollama["ok"] or groq["ok"], "ollama": ollama, "groq": groq}
