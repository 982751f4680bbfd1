"""Checks at the edge for what the stores accept: text Postgres and UTF-8 can hold, bounded numbers and dates.

Postgres refuses a NUL character in text, and a lone surrogate (`"\\ud800"` in JSON, which
Python's json module lets through) cannot be encoded as UTF-8 for the database, Redis or a
reply. Both are refused where the input comes in, with one stable code, instead of failing
deep inside a query. Pydantic schemas use `StoredText`; plain code calls `text_validate`.
No Django here: voice.synthesis, which is Django-free, uses it too.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from accounts.errors import InvalidInput

INVALID_TEXT_CODE = "invalid_text_characters"
# Page offsets, ids and the like: what a Postgres bigint holds, far beyond any real value.
MAX_QUERY_INT = 2**53
# Dates a client may send (window bounds, a key's expiry): far from year 1 and 9999, where
# converting to UTC or adding a day overflows.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)


def text_problem(text: str) -> str | None:
    """What makes `text` unstorable ("a NUL character", "a lone surrogate"), or None."""
    if "\x00" in text:
        return "a NUL character (U+0000)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "a lone surrogate (U+D800 to U+DFFF)"
    return None


def text_validate(text: str, *, field: str) -> str:
    """`text` unchanged, or InvalidInput `invalid_text_characters` naming `field`."""
    problem = text_problem(text)
    if problem is not None:
        raise InvalidInput(f"{field} contains {problem}, which cannot be stored.", code=INVALID_TEXT_CODE)
    return text


def datetime_in_range(moment: datetime) -> bool:
    """Whether `moment` lies between EARLIEST and LATEST (a naive one compared as it reads)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        return EARLIEST.replace(tzinfo=None) <= moment <= LATEST.replace(tzinfo=None)
    return EARLIEST <= moment <= LATEST


def _pydantic_datetime_check(moment: datetime) -> datetime:
    if not datetime_in_range(moment):
        raise PydanticCustomError(
            "datetime_out_of_range",
            "must lie between {earliest} and {latest}",
            {"earliest": f"{EARLIEST:%Y-%m-%d}", "latest": f"{LATEST:%Y-%m-%d}"},
        )
    return moment


def _pydantic_text_check(text: str) -> str:
    problem = text_problem(text)
    if problem is not None:
        # The error's type is the code: the API's validation handler answers with it.
        raise PydanticCustomError(INVALID_TEXT_CODE, "contains {problem}, which cannot be stored", {"problem": problem})
    return text


# A schema's str field that is stored or sent on: NUL or a lone surrogate is refused with the code.
StoredText = Annotated[str, AfterValidator(_pydantic_text_check)]
# A date a client sends that is stored or computed with: between EARLIEST and LATEST.
StoredDatetime = Annotated[datetime, AfterValidator(_pydantic_datetime_check)]
# A non-negative integer parameter (an id, an offset) that every store can hold.
QueryInt = Annotated[int, Field(ge=0, le=MAX_QUERY_INT)]
