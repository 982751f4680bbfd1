"""Cut a token stream into pieces that can be spoken on their own, as the tokens arrive.

The first piece is cut as early as it still sounds natural (a clause boundary past
`first_min_chars`, or the first sentence end) so that audio starts while the LLM is still
writing; later pieces are whole sentences. What is not a sentence end: "M. Dupont",
"e.g. this", decimals "3.14" / "3,14", times "14:30", list markers "1.", initials "J. K.".
Text without punctuation is cut at a space once it grows past `max_chars` (a clause mark
before that is preferred); a single run of characters longer than that is cut hard.

Lines are pieces of their own; a Markdown code fence line is passed on even though it says
nothing, so that the caller can skip code blocks. `feed` is O(new text) amortised: it
rescans only from where the last scan stopped.
"""

from __future__ import annotations

import re

SENTENCE_ENDS = ".!?…。！？"
CLAUSE_MARKS = ",;:—–"
CLOSERS = "\"'”’»)]}*_"
# Words that end in a period without ending the sentence (compared without the period).
ABBREVIATIONS = frozenset(
    {
        "M",
        "MM",
        "Mme",
        "Mmes",
        "Mlle",
        "Mlles",
        "Dr",
        "Pr",
        "Me",
        "Mgr",
        "St",
        "Ste",
        "Mr",
        "Mrs",
        "Ms",
        "Prof",
        "Jr",
        "Sr",
        "Sgt",
        "Capt",
        "Gen",
        "Col",
        "Lt",
        "Rev",
        "Hon",
        "vs",
        "cf",
        "ex",
        "env",
        "av",
        "apr",
        "etc",
        "p",
        "pp",
        "vol",
        "chap",
        "fig",
        "no",
        "No",
        "n",
        "tel",
        "tél",
        "approx",
        "min",
        "max",
        "sq",
        "Inc",
        "Ltd",
        "Co",
        "Corp",
        "Ave",
        "Blvd",
        "bd",
        "Jan",
        "Feb",
        "Fév",
        "Aug",
        "Sept",
        "Oct",
        "Nov",
        "Dec",
        "Déc",
        "janv",
        "févr",
        "avr",
        "juil",
        "oct",
        "nov",
        "déc",
    }
)
# Abbreviations that usually do end a sentence when a capital follows ("... etc. Then").
_END_WHEN_CAPITAL_FOLLOWS = frozenset({"etc", "min", "max", "approx", "Inc", "Ltd", "Corp", "Co", "vol", "fig"})
_LIST_MARKER = re.compile(r"^\s*(?:\d{1,3}|[a-zA-Z])$")


def _speakable(text: str) -> bool:
    return any(char.isalnum() for char in text)


def _worth_a_piece(text: str) -> bool:
    # Code fences are passed on, alone, so that the caller can leave code blocks unspoken.
    return _speakable(text) or text.strip().startswith("```")


class SpeechSplitter:
    """Incremental splitter: `feed(token)` returns the pieces completed so far, `flush()` the rest."""

    def __init__(self, *, first_min_chars: int = 24, max_chars: int = 220, first_max_chars: int | None = None) -> None:
        self.first_min_chars = first_min_chars
        self.max_chars = max_chars
        self.first_max_chars = first_max_chars or max(first_min_chars * 3, 60)
        self._buffer = ""
        self._scan = 0  # everything before this index has been examined for boundaries
        self._pieces_out = 0

    def feed(self, text: str) -> list[str]:
        """Add streamed text; return the pieces that are now complete (often none)."""
        self._buffer += text
        pieces: list[str] = []
        while True:
            cut = self._find_cut()
            if cut is None:
                return pieces
            self._emit(cut, pieces)

    def flush(self) -> list[str]:
        """The end of the stream: whatever is left, if it holds anything to say."""
        pieces: list[str] = []
        while len(self._buffer) > self._limit():
            self._emit(self._overflow_cut(), pieces)
        rest, self._buffer, self._scan = self._buffer.strip(), "", 0
        if _worth_a_piece(rest):
            pieces.append(rest)
            self._pieces_out += 1
        return pieces

    def _emit(self, cut: int, pieces: list[str]) -> None:
        piece, self._buffer = self._buffer[:cut].strip(), self._buffer[cut:]
        self._scan = 0
        if _worth_a_piece(piece):
            pieces.append(piece)
            self._pieces_out += 1

    def _limit(self) -> int:
        return self.first_max_chars if self._pieces_out == 0 else self.max_chars

    def _find_cut(self) -> int | None:
        buffer = self._buffer
        i = self._scan
        while i < len(buffer):
            char = buffer[i]
            if char == "\n":
                if _worth_a_piece(buffer[:i]):
                    return i + 1
            elif char in SENTENCE_ENDS or (char in CLAUSE_MARKS and self._pieces_out == 0):
                end = i + 1
                while end < len(buffer) and (buffer[end] in SENTENCE_ENDS or buffer[end] in CLOSERS):
                    end += 1
                # French closing quotes stand after a space: « bonjour. » Puis...
                spaced = end
                while spaced < len(buffer) and buffer[spaced] in " \u00a0\u202f":
                    spaced += 1
                if spaced < len(buffer) and buffer[spaced] in "»”" and spaced > end:
                    end = spaced + 1
                if end >= len(buffer) or (spaced == len(buffer) and spaced > end):
                    self._scan = i  # undecided until the next character arrives
                    return self._overflow_if_needed()
                if buffer[end].isspace():
                    verdict = self._is_boundary(i, end)
                    if verdict is None:
                        self._scan = i
                        return self._overflow_if_needed()
                    if verdict:
                        return end
                i = end
                continue
            i += 1
        self._scan = len(buffer)
        return self._overflow_if_needed()

    def _is_boundary(self, mark: int, end: int) -> bool | None:
        """Is the punctuation at `mark` (followed by whitespace at `end`) a place to cut?
        None: cannot tell before the next word starts."""
        buffer = self._buffer
        char = buffer[mark]
        before = buffer[:mark]
        if char in CLAUSE_MARKS:
            # Only for the first piece: a clause boundary once enough has been said.
            return len(before.strip()) >= self.first_min_chars
        if not _speakable(before):
            return False
        trailing = buffer[mark + 1 : end]
        if char != "." or (trailing and set(trailing) != {"."}):
            return True  # "!", "?", "…", "?!", or a period followed by closers
        if trailing:
            return True  # an ellipsis "..."
        word = before.rsplit(None, 1)[-1] if before.split() else ""
        next_word_at = len(buffer) - len(buffer[end:].lstrip())
        if next_word_at >= len(buffer):
            return None
        next_char = buffer[next_word_at]
        if _LIST_MARKER.match(before):
            return False  # "1. First point", "a. option"
        bare = word.lstrip("(\"'«“")
        if bare in ABBREVIATIONS:
            return bare in _END_WHEN_CAPITAL_FOLLOWS and next_char.isupper()
        if len(bare) == 1 and bare.isupper():
            return False  # an initial: "J. K. Rowling"
        if "." in bare and next_char.islower():
            return False  # "e.g. this", "p.ex. ceci"
        # A sentence rarely starts in lower case: an abbreviation we do not know.
        return not next_char.islower()

    def _overflow_if_needed(self) -> int | None:
        if len(self._buffer) <= self._limit():
            return None
        return self._overflow_cut()

    def _overflow_cut(self) -> int:
        """Where to cut a piece that grew too long without a sentence end."""
        limit = self._limit()
        window = self._buffer[: limit + 1]
        clause = max(window.rfind(f"{mark} ") for mark in CLAUSE_MARKS)
        if clause >= limit // 3:
            return clause + 1
        space = window.rfind(" ")
        if space > 0 and _speakable(window[:space]):
            return space + 1
        return limit
