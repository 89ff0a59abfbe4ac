"""A relayed third server's event in a room we don't hold is refused before any key
fetch (issue 18, finding 9: events for a room we don't have cost a descriptor fetch
of a name the sender chose). Pure: swfed.core.rooms.check_third_party_room."""

from __future__ import annotations

import pytest

from swfed.core.errors import FederationError
from swfed.core.rooms import check_third_party_room

ROOM = "!abcdefgh:evil.test"

# (event origin, request origin, room known here, refused?)
THIRD_PARTY_CASES = [
    ("evil.test", "evil.test", False, False),   # the host's own invite brings the room
    ("evil.test", "evil.test", True, False),
    ("x.test", "evil.test", True, False),       # a member's event the host relays
    ("x.test", "evil.test", False, True),       # a name of the sender's choosing, no room
    ("nowhere.invalid", "evil.test", False, True),
]


@pytest.mark.parametrize(("origin", "sender", "known", "refused"), THIRD_PARTY_CASES)
def test_third_party_events_need_a_room_we_hold(origin: str, sender: str, known: bool,
                                               refused: bool) -> None:
    event = {"room_id": ROOM, "origin": origin}
    if refused:
        with pytest.raises(FederationError) as info:
            check_third_party_room(event, sender, known)
        assert info.value.code == "SW_FED_UNKNOWN_ROOM"
    else:
        check_third_party_room(event, sender, known)
