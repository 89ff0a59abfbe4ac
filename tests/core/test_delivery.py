"""What a /send answer settles, and how a batch is cut: tables of cases."""

from __future__ import annotations

from swfed.core.delivery import Refusal, classify, take_batch


def test_classify() -> None:
    settled = classify(["a", "b", "c", "d", "e", "f"], {
        "a": {}, "b": {"seq": 7}, "c": {"error": {"code": "SW_FED_NOT_MEMBER", "message": "no"}},
        "d": {"error": {"code": "SW_FED_PEER_UNREACHABLE", "transient": True}},
        "e": "junk", "x": {}})
    assert settled.delivered == {"a": None, "b": 7}
    assert settled.refused == {"c": Refusal("SW_FED_NOT_MEMBER", "no")}
    assert settled.transient == {"d": Refusal("SW_FED_PEER_UNREACHABLE", "")}
    assert settled.settles_anything


def test_an_answer_that_settles_nothing() -> None:
    for results in ({}, [], None, {"a": "x"}, {"a": {"error": {"transient": True}}}):
        assert not classify(["a"], results).settles_anything
    assert classify(["a"], {"a": {"seq": True}}).delivered == {"a": None}  # a bool is no seq
    # a refusal without a proper error body is still final, with a code
    assert classify(["a"], {"a": {"error": "no"}}).refused == {"a": Refusal("SW_FED_ERROR", "")}


def test_take_batch() -> None:
    assert take_batch([]) == 0
    assert take_batch([10] * 150) == 100
    assert take_batch([30_000] * 40, max_bytes=512 * 1024) == 17
    assert take_batch([2_000_000, 10]) == 1  # one event always goes, however large
    assert take_batch([10, 2_000_000]) == 1


def test_a_send_body_joined_from_stored_events_is_their_canonical_json() -> None:
    from swfed.core.canonical import encode_canonical_json
    from swfed.core.delivery import send_body

    events = [{"event_id": "e1", "content": {"body": "é ✓ \"q\""}, "origin_ts": 1},
              {"type": "message", "a": [1, {"z": None, "b": True}]}]
    raw = send_body("a.test", "1-2", [encode_canonical_json(e) for e in events])
    assert raw == encode_canonical_json({"origin": "a.test", "txn_id": "1-2", "events": events})
    assert send_body("a.test", "x", []) == encode_canonical_json(
        {"origin": "a.test", "txn_id": "x", "events": []})


def test_a_pipelined_send_body_names_the_event_before_it_canonically() -> None:
    from swfed.core.canonical import encode_canonical_json
    from swfed.core.delivery import send_body

    events = [{"event_id": "e2", "content": {"body": "ü"}}]
    raw = send_body("a.test", "2-2", [encode_canonical_json(e) for e in events],
                    after=("!r\"é:h.test", "e1"))
    assert raw == encode_canonical_json({"origin": "a.test", "txn_id": "2-2", "events": events,
                                         "after": {"room_id": "!r\"é:h.test",
                                                   "event_id": "e1"}})


def test_only_an_answer_deferring_everything_for_order_is_a_deferral_for_order() -> None:
    from swfed.core.delivery import OUT_OF_ORDER, deferred_for_order

    later = {"error": {"code": OUT_OF_ORDER, "message": "after e1", "transient": True}}
    other = {"error": {"code": "SW_INTERNAL", "message": "boom", "transient": True}}
    assert deferred_for_order(classify(["a", "b"], {"a": later, "b": later}))
    assert not deferred_for_order(classify(["a", "b"], {"a": later, "b": other}))
    assert not deferred_for_order(classify(["a", "b"], {"a": later, "b": {}}))
    assert not deferred_for_order(classify(["a"], {}))
