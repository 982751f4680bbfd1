"""Admin for conversations and their messages."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib import admin

from chat.models import ChatMessage, ChatSession

# Django's admin classes are generic only in django-stubs: subscripted for the type checker
# alone, since subscripting them at run time needs django_stubs_ext to patch them.
if TYPE_CHECKING:
    _MessageInline = admin.TabularInline[ChatMessage, ChatSession]
    _SessionModelAdmin = admin.ModelAdmin[ChatSession]
else:
    _MessageInline = admin.TabularInline
    _SessionModelAdmin = admin.ModelAdmin


class ChatMessageInline(_MessageInline):
    model = ChatMessage
    extra = 0
    readonly_fields = ["role", "content", "status", "backend", "model", "request_id", "created_at"]


@admin.register(ChatSession)
class ChatSessionAdmin(_SessionModelAdmin):
    list_display = ["session_id", "title", "owner", "created_at", "updated_at"]
    search_fields = ["session_id", "title", "owner__username"]
    inlines = [ChatMessageInline]
