"""Which picture each open page shows, so that a description or an answer about a picture no longer shown stops.

Another picture cannot simply cancel what streams about the old one. Its change event reaches the server about
0.26 s after the picture shows (measured in the browser test, 2 runs of 2), and a cancel there also stopped the
descriptions and questions sent in between, which are about the new picture. Comparing pictures stops only the
old ones, and tells the change event whether the chat and the maps still belong to another picture.

A picture is named by its upload's path, which the page sends unchanged with every event (the model events take
unprocessed payloads). No picture changes nothing: a picture replaced by another changes to none and then to the
new one, in two events that may reach the server in either order, and a late "none" must not stop what is asked
about the new one. A session is Gradio's, one per open page. API calls never report a picture shown, so nothing
of theirs is stopped. Under ZeroGPU the model handlers run in a forked process, whose copy of this record would be
stale: there nothing is recorded or stopped, and they stream to the end, as before.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

MAX_SESSIONS = 4096  # records kept; the oldest page's goes first, and that page only loses the early stop
OUTPUTS = ("chat", "maps")  # what the change event empties; the maps belong to the latest run, answer or description
_NOTHING = object()  # nothing reported yet


@dataclass
class _Session:
    shown: object = _NOTHING  # the picture the page reported last (never none)
    about: dict = field(default_factory=dict)  # output -> the picture of the run that wrote it last


def picture_name(image) -> str | None:
    """What names a picture across events: the upload's path, or the path itself; None for no picture."""
    if isinstance(image, dict):
        return image.get("path") or image.get("url")
    return image if isinstance(image, str) else None


class ShownPictures:
    def __init__(self, max_sessions: int = MAX_SESSIONS):
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._max_sessions = max_sessions
        self._lock = threading.Lock()
        self._process = os.getpid()

    def chat_about_another(self, session: str | None, image) -> bool:
        """Whether the page's chat was last written about another picture than `image`: a question sent with this
        picture before its change event came still carries the conversation about the picture before."""
        if session is None or not self._here():
            return False
        with self._lock:
            record = self._sessions.get(session)
            before = record.about.get("chat", _NOTHING) if record else _NOTHING
            return before is not _NOTHING and before != picture_name(image)

    def wrote(self, session: str | None, image, answer: bool) -> None:
        """An answer (in the chat) or a description about `image` sent its first update; either writes the maps.
        Recorded then, not when it starts, so that a run that fails first, or one about a picture the page no longer
        shows, leaves the record as the page is."""
        if session is None or not self._here():
            return
        name = picture_name(image)
        with self._lock:
            record = self._session(session)
            if record.shown is not _NOTHING and record.shown != name:
                return
            record.about["maps"] = name
            if answer:
                record.about["chat"] = name

    def show(self, session: str | None, image) -> tuple[str, ...]:
        """The page now shows `image`: the outputs (of OUTPUTS) last written about another picture, to be emptied.
        A run sent with this picture just before its change event came is not among them. No picture: none."""
        name = picture_name(image)
        if name is None or not self._here():
            return ()
        if session is None:
            return OUTPUTS
        with self._lock:
            record = self._session(session)
            record.shown = name
            return tuple(output for output in OUTPUTS if record.about.get(output, _NOTHING) != name)

    def replaced(self, session: str | None, image) -> bool:
        """Whether the page has since shown another picture than `image`."""
        if not self._here():
            return False
        with self._lock:
            record = self._sessions.get(session) if session is not None else None
            return record is not None and record.shown is not _NOTHING and record.shown != picture_name(image)

    def _here(self) -> bool:
        """False in a forked process (ZeroGPU's), whose copy is stale, and whose copied lock may be held forever."""
        return os.getpid() == self._process

    def _session(self, session: str) -> _Session:
        record = self._sessions.pop(session, None) or _Session()
        self._sessions[session] = record  # the newest last
        while len(self._sessions) > self._max_sessions:
            self._sessions.popitem(last=False)
        return record
