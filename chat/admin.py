"""Admin for conversations and their messages."""

from __future__ import annotations

from django.contrib import admin

from chat.models import ChatMessage, ChatSession


class ChatMessageInline(admin.TabularInline):
    model = ChatMessage
    extra = 0
    readonly_fields = ["role", "content", "status", "backend", "model", "request_id", "created_at"]


@admin.register(ChatSession)
class ChatSessionAdmin(admin.ModelAdmin):
    list_display = ["session_id", "title", "owner", "created_at", "updated_at"]
    search_fields = ["session_id", "title", "owner__username"]
    inlines = [ChatMessageInline]
