"""Who may say who is typing where (swfed.core.rooms.check_typing), and where a signal
goes on (swfed.typing_signals.targets): tables, no I/O."""

from __future__ import annotations

import pytest

from swfed.core.errors import FederationError
from swfed.core.rooms import Room, check_typing
from swfed.typing_signals import local_audience, targets

HOSTED = Room("!abcdefgh:h.test", "r", "standard", True, "h.test", "@c:h.test", 0, True)
ELSEWHERE = HOSTED  # the same room, seen from a member server (me = m.test)
OFF = Room("!abcdefgh:h.test", "r", "standard", False, "h.test", "@c:h.test", 0, True)


@pytest.mark.parametrize(("what", "room", "me", "origin", "user", "joined", "ok"), [
    ("to the host, a member server for its own user", HOSTED, "h.test", "m.test",
     "@b:m.test", True, True),
    ("to the host, for another server's user", HOSTED, "h.test", "m.test", "@x:x.test",
     True, False),
    ("for someone not joined", HOSTED, "h.test", "m.test", "@b:m.test", False, False),
    ("in a room we do not hold", None, "h.test", "m.test", "@b:m.test", True, False),
    ("in a room whose flag is off here", OFF, "h.test", "m.test", "@b:m.test", True, False),
    ("to a member server, the host relaying anyone's", ELSEWHERE, "m.test", "h.test",
     "@x:x.test", True, True),
    ("to a member server, from another member server", ELSEWHERE, "m.test", "x.test",
     "@x:x.test", True, False),
])
def test_check_typing(what: str, room: Room | None, me: str, origin: str, user: str,
                      joined: bool, ok: bool) -> None:
    if ok:
        check_typing(room, me, origin, user, joined)
        return
    with pytest.raises(FederationError) as exc:
        check_typing(room, me, origin, user, joined)
    assert exc.value.code == "SW_FED_NOT_MEMBER"


JOINED = ["@a:h.test", "@b:m.test", "@d:m.test", "@x:x.test"]


@pytest.mark.parametrize(("host", "me", "user", "origin", "to"), [
    ("h.test", "h.test", "@a:h.test", "h.test", {"m.test", "x.test"}),  # ours, we host
    ("h.test", "h.test", "@b:m.test", "m.test", {"x.test"}),  # relayed on, not back
    ("h.test", "m.test", "@b:m.test", "m.test", {"h.test"}),  # ours, to the host only
    ("h.test", "m.test", "@a:h.test", "h.test", set()),  # heard from the host: no further
])
def test_targets(host: str, me: str, user: str, origin: str, to: set[str]) -> None:
    assert targets(host, me, JOINED, user, origin) == to


def test_local_audience_is_ours_but_the_typist() -> None:
    assert local_audience(JOINED, "m.test", "@b:m.test") == {"d"}
