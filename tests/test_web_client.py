"""The web client in a real browser, across two real servers with TLS.

``a.test`` and ``b.test`` are two swfed processes on 127.0.0.1 with
certificates from one test CA (tests.harness.federated_servers). Two headless
Chromium sessions (Debian's chromium + chromium-driver, driven by Selenium)
map those names to 127.0.0.1: alice signs in to a.test's client, bob to
b.test's. Everything happens through the pages; the local API is called
directly only to set b.test's policy and to wait for the host's view of a
join. Every wait polls the page (or the API) with a deadline.

Set ``SWFED_SCREENSHOTS=docs/client`` to refresh the screenshots of
docs/client.md; otherwise they go to the test's temporary directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import bearer
from tests.harness import ServerProcess, TlsNet, federated_servers, running
from tests.web_harness import browser, have_browser, wait_until

pytestmark = pytest.mark.skipif(
    have_browser() is not None and os.environ.get("CI") != "true",
    reason=f"needs Debian's chromium and chromium-driver: {have_browser()}")

PASSWORD = "a long test password"
HOSTILE = ('<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
           '<b>bold</b> \u202egnp.exe & "quotes"')
BOB_NAME = "Bob <i>the</i> builder"


def add_user(server: ServerProcess, local_id: str, *extra: str) -> str:
    """A user with a password (read from stdin by the CLI); returns a bearer token."""
    import json

    result = subprocess.run(
        [sys.executable, "-m", "swfed", "--config", str(server.config_path), "admin", "user",
         "create", local_id, "--password", "--json", *extra],
        input=PASSWORD + "\n", capture_output=True, text=True, timeout=60,
        env=server._environ())
    assert result.returncode == 0, result.stderr
    return str(json.loads(result.stdout)["token"])


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[tuple[TlsNet, ServerProcess, ServerProcess, dict[str, str]]]:
    net, (a, b) = federated_servers(tmp_path_factory.mktemp("web"), ["a.test", "b.test"])
    with running(a, b):
        tokens = {"alice": add_user(a, "alice", "--admin", "--display-name", "Alice"),
                  "bob": add_user(b, "bob", "--display-name", BOB_NAME),
                  "root_b": b.create_user("root", admin=True)}
        yield net, a, b, tokens


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    target = Path(os.environ.get("SWFED_SCREENSHOTS") or tmp_path / "screenshots")
    target.mkdir(parents=True, exist_ok=True)
    return target


# -- page helpers -----------------------------------------------------------


def css(d: Any, selector: str) -> Any:
    from selenium.webdriver.common.by import By

    return d.find_element(By.CSS_SELECTOR, selector)


def all_css(d: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(d.find_elements(By.CSS_SELECTOR, selector))


def text_of(d: Any, element: Any) -> str:
    """Exactly the text the DOM holds (Selenium's .text normalises whitespace)."""
    return str(d.execute_script("return arguments[0].textContent", element))


def sign_in(d: Any, origin: str, user: str) -> None:
    d.get(origin + "/")
    wait_until(d, lambda: css(d, "#login-user"), what="the sign-in form")
    css(d, "#login-user").send_keys(user)
    css(d, "#login-password").send_keys("wrong password")
    css(d, "#login-submit").click()
    wait_until(d, lambda: "Wrong user name or password" in css(d, "#login-error").text,
               what="the sign-in refusal")
    css(d, "#login-password").clear()
    css(d, "#login-password").send_keys(PASSWORD)
    css(d, "#login-submit").click()
    wait_until(d, lambda: css(d, "#app[data-ready=true]"), what=f"{user}'s client to load")
    wait_until(d, lambda: css(d, "#conn.live"), what="the live stream")


def message(d: Any, body_part: str) -> Any:
    for item in all_css(d, "#events .msg"):
        if body_part in text_of(d, css(item, ".body")):
            return item
    return None


def send(d: Any, text: str) -> None:
    from selenium.webdriver.common.keys import Keys

    box = css(d, "#composer-input")
    box.send_keys(text)
    box.send_keys(Keys.ENTER)


def hover_click(d: Any, item: Any, selector: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(d).move_to_element(item).perform()
    css(item, selector).click()


def members(origin_client: httpx.Client, token: str, room_id: str) -> list[dict[str, Any]]:
    r = origin_client.get(f"/v1/rooms/{room_id}/members", headers=bearer(token))
    return list(r.json().get("data", [])) if r.status_code == 200 else []


# -- the scenario -------------------------------------------------------------


def test_two_people_chat_across_servers_in_the_browser(
        fed: tuple[TlsNet, ServerProcess, ServerProcess, dict[str, str]], shots: Path) -> None:
    from selenium.webdriver.common.keys import Keys

    net, a, b, tokens = fed
    a_origin = f"https://a.test:{a.port}"
    b_origin = f"https://b.test:{b.port}"
    ctx = net.ssl_context()
    api_a = httpx.Client(base_url=a.url, verify=ctx, timeout=20, headers={"Host": "a.test"})
    api_b = httpx.Client(base_url=b.url, verify=ctx, timeout=20, headers={"Host": "b.test"})
    with browser(["a.test", "b.test"]) as alice, browser(["a.test", "b.test"]) as bob, \
            api_a, api_b:
        # -- alice signs in; her first screen ---------------------------------
        alice.get(a_origin + "/")
        wait_until(alice, lambda: css(alice, "#login-user"), what="the sign-in form")
        alice.save_screenshot(str(shots / "sign-in.png"))
        sign_in(alice, a_origin, "alice")
        assert css(alice, "#me-id").text == "@alice:a.test"
        # under TLS the session cookie is __Host-, Secure, HttpOnly, SameSite=Strict; the
        # page's scripts cannot read it and no token is kept anywhere a script can reach
        (cookie,) = alice.get_cookies()
        assert cookie["name"] == "__Host-swfed_session" and cookie["secure"]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
        assert alice.execute_script("return document.cookie") == ""
        assert alice.execute_script("return JSON.stringify(localStorage)").find("swt_") < 0

        # -- alice (a tenant admin) opens federation to b.test in the policy editor
        css(alice, "#admin-button").click()
        css(alice, "#tab-policy").click()
        wait_until(alice, lambda: css(alice, "#policy-mode"), what="the policy editor")
        from selenium.webdriver.support.ui import Select

        Select(css(alice, "#policy-mode")).select_by_value("invite_only")
        css(alice, "#policy-allowed").clear()
        css(alice, "#policy-allowed").send_keys("b.test")
        css(alice, "#policy-save").click()
        wait_until(alice, lambda: css(alice, "#policy-msg").text == "Saved.",
                   what="the policy to save")
        alice.save_screenshot(str(shots / "admin-policy.png"))
        policy = api_a.get("/v1/admin/federation/policy", headers=bearer(tokens["alice"])).json()
        assert policy["default_mode"] == "invite_only" and policy["allowed_peers"] == ["b.test"]
        r = api_b.put("/v1/admin/federation/policy", headers=bearer(tokens["root_b"]),
                      json={"default_mode": "invite_only", "allowed_peers": ["a.test"]})
        assert r.status_code == 200, r.text

        # -- alice starts a federated DM with @bob:b.test ------------------------
        css(alice, "#new-dm").click()
        css(alice, "#new-dm-fqid").send_keys("@bob:b.test")
        css(alice, "#new-dm-form button[type=submit]").click()
        room_id = wait_until(alice, lambda: css(alice, ".room-item.active").get_attribute(
            "data-room-id"), what="the new DM to open")
        assert room_id.endswith(":a.test")
        dm_item = css(alice, f'#dm-list .room-item[data-room-id="{room_id}"]')
        assert css(dm_item, ".name").text == "@bob:b.test"  # a DM is named by the other one

        # -- bob signs in, sees the invite in his notifications, accepts ------------
        sign_in(bob, b_origin, "bob")
        wait_until(bob, lambda: css(bob, "#bell-count").text == "1",
                   what="bob's notification count")
        css(bob, "#bell").click()
        invite = wait_until(bob, lambda: css(
            bob, f'.notification[data-type=invite][data-room-id="{room_id}"]'),
            what="the invite in bob's notifications")
        assert "@alice:a.test" in invite.text
        bob.save_screenshot(str(shots / "notifications-invite.png"))
        css(invite, "button.accept").click()
        wait_until(bob, lambda: css(bob, ".room-item.active").get_attribute("data-room-id")
                   == room_id, what="the accepted room to open on b.test")

        # the host's member list shows the join before anyone talks
        wait_until(alice, lambda: any(
            m["id"] == "@bob:b.test" and m["membership"] == "join"
            for m in members(api_a, tokens["alice"], room_id)), what="bob's join on a.test")

        # -- both headers show the 🌐 badge; b.test lists alice as foreign -----------
        wait_until(alice, lambda: css(alice, "#fed-badge"), what="🌐 on a.test")
        wait_until(bob, lambda: css(bob, "#fed-badge"), what="🌐 on b.test")
        assert "🌐" in css(bob, "#room-title").text
        css(bob, "#members-toggle").click()
        member = wait_until(bob, lambda: css(bob, '.member[data-fqid="@alice:a.test"]'),
                            what="alice in bob's member list")
        assert css(member, ".member-id").text == "@alice:a.test"
        assert "foreign" in css(member, ".tag.foreign").text
        assert "a.test" in css(member, ".tag.foreign").text
        me_there = css(bob, '.member[data-fqid="@bob:b.test"]')
        assert css(me_there, ".member-id").text == "@bob" and not all_css(me_there, ".foreign")
        assert text_of(bob, css(me_there, ".name")) == BOB_NAME  # markup stays text

        # -- messages, live both ways -----------------------------------------------
        send(alice, "hello bob, welcome to a.test")
        wait_until(bob, lambda: message(bob, "hello bob, welcome"), what="alice's message on b")
        greeting = message(bob, "hello bob, welcome")
        assert css(greeting, ".sender-id").text == "@alice:a.test"

        # bob replies to it
        hover_click(bob, greeting, ".reply-button")
        assert "hello bob" in css(bob, "#reply-bar").text
        assert bob.switch_to.active_element.get_attribute("id") == "composer-input"
        css(bob, "#composer-input").send_keys(Keys.ESCAPE)  # Esc cancels a reply
        assert not css(bob, "#reply-bar").is_displayed()
        hover_click(bob, greeting, ".reply-button")
        send(bob, "hi alice, replying from b.test")
        reply = wait_until(alice, lambda: message(alice, "replying from b.test"),
                           what="bob's reply on a")
        assert "hello bob, welcome" in css(reply, ".reply-quote").text
        assert "@bob:b.test" == css(reply, ".sender-id").text

        # alice reacts to the reply; bob sees the aggregated reaction
        hover_click(alice, reply, ".react-button")
        css(alice, '.picker .pick[data-key="👍"]').click()

        def bobs_reaction() -> Any:
            item = message(bob, "replying from b.test")
            chips = all_css(item, '.reaction[data-key="👍"]') if item else []
            return chips and css(chips[0], ".n").text == "1" and chips[0]

        chip = wait_until(bob, bobs_reaction, what="alice's 👍 on b")
        assert "@alice:a.test" in chip.get_attribute("title")
        # bob adds the same key: one chip, counted twice, on both screens
        chip.click()
        wait_until(alice, lambda: css(message(alice, "replying from b.test"),
                                      '.reaction[data-key="👍"] .n').text == "2",
                   what="two 👍 on a")

        # bob mentions alice with completion over the room's members
        box = css(bob, "#composer-input")
        box.send_keys("@ali")
        option = wait_until(bob, lambda: css(bob, "#complete .option"), what="completion")
        assert option.get_attribute("data-id") == "@alice:a.test"
        box.send_keys(Keys.TAB)
        assert box.get_attribute("value") == "@alice:a.test "
        box.send_keys("have a look at this")
        box.send_keys(Keys.ENTER)
        mention = wait_until(alice, lambda: message(alice, "have a look at this"),
                             what="the mention on a")
        assert "mentions-me" in mention.get_attribute("class")
        assert css(mention, ".mention.me").text == "@alice:a.test"
        wait_until(alice, lambda: css(alice, "#bell-count").text == "1",
                   what="alice's mention notification")
        alice.save_screenshot(str(shots / "room-alice.png"))
        css(alice, "#bell").click()
        jump = wait_until(alice, lambda: css(alice, ".notification[data-type=mention] .jump"),
                          what="the mention in alice's notifications")
        event_id = mention.get_attribute("data-event-id")
        assert css(alice, ".notification[data-type=mention]").get_attribute(
            "data-event-id") == event_id
        jump.click()
        wait_until(alice, lambda: "flash" in css(alice, f"#ev-{event_id}").get_attribute("class"),
                   what="the jump to the mention")

        # hostile text from the peer stays text
        send(bob, HOSTILE)
        hostile = wait_until(alice, lambda: message(alice, "gnp.exe"), what="bob's hostile text")
        assert text_of(alice, css(hostile, ".body")) == HOSTILE
        assert not all_css(hostile, ".body img, .body script, .body b")
        assert alice.execute_script("return window.__pwned") is None
        wait_until(bob, lambda: message(bob, "gnp.exe"), what="the hostile text on b too")
        hover_click(bob, message(bob, "gnp.exe"), ".react-button")
        css(bob, ".picker-other").send_keys("<i>k</i>" + Keys.ENTER)
        chip = wait_until(alice, lambda: all_css(message(alice, "gnp.exe"), ".reaction"),
                          what="bob's hostile reaction key")[0]
        assert chip.get_attribute("data-key") == "<i>k</i>" and not all_css(chip, "i")
        assert "<i>k</i>" in text_of(alice, chip)
        wait_until(bob, lambda: not all_css(bob, "#events .msg.st-pending"),
                   what="bob's own messages to settle")
        bob.save_screenshot(str(shots / "room-bob-members.png"))

        # a longer history pages backwards
        r = api_a.post("/v1/rooms", headers=bearer(tokens["alice"]), json={"name": "history"})
        history = r.json()["room_id"]
        for i in range(60):
            r = api_a.post(f"/v1/rooms/{history}/messages", headers=bearer(tokens["alice"]),
                           json={"body": f"old message {i}"})
            assert r.status_code == 201, r.text
        item = wait_until(alice, lambda: css(alice, f'.room-item[data-room-id="{history}"]'),
                          what="the new room in alice's list")
        item.click()
        wait_until(alice, lambda: message(alice, "old message 59"), what="the newest messages")
        # scrolling to the top loads the page before (a page is at most 50)
        alice.execute_script("document.getElementById('timeline').scrollTop = 0")
        wait_until(alice, lambda: len(all_css(alice, "#events .msg")) == 60,
                   what="the older messages")
        assert all_css(alice, "#events .start") and message(alice, "old message 0")
        # the room's settings: this server's half of the federate switch
        css(alice, "#room-settings").click()
        css(alice, "#room-federate").click()
        wait_until(alice, lambda: "on for this room" in css(alice, "#room-settings-msg").text,
                   what="federate switched on")
        r = api_a.get(f"/v1/rooms/{history}", headers=bearer(tokens["alice"]))
        assert r.json()["federate"] is True
        # and leaving it (after a confirmation) takes it off the list
        css(alice, "#room-leave").click()
        wait_until(alice, lambda: alice.switch_to.alert, what="the confirmation").accept()
        wait_until(alice, lambda: not all_css(alice, f'.room-item[data-room-id="{history}"]'),
                   what="the room to leave the list")
        css(alice, f'.room-item[data-room-id="{room_id}"]').click()
        wait_until(alice, lambda: message(alice, "gnp.exe"), what="alice back in the DM")

        # search finds the message on b.test and jumps to it
        from selenium.webdriver.common.action_chains import ActionChains

        ActionChains(bob).key_down(Keys.CONTROL).send_keys("k").key_up(Keys.CONTROL).perform()
        assert bob.switch_to.active_element.get_attribute("id") == "search"  # Ctrl+K
        bob.switch_to.active_element.send_keys("replying" + Keys.ENTER)
        result = wait_until(bob, lambda: css(bob, "#search-results .result"),
                            what="a search result")
        assert "replying from b.test" in result.text
        bob.save_screenshot(str(shots / "search.png"))
        result.click()
        wait_until(bob, lambda: "flash" in css(bob, ".msg.flash").get_attribute("class"),
                   what="the jump to the search result")

        # -- the admin's peers view and the doctor, from the browser ------------------
        css(alice, "#admin-button").click()
        row = wait_until(alice, lambda: css(alice, '#peers-table tr[data-peer="b.test"]'),
                         what="b.test in the peers view")
        assert "b.test" in row.text
        alice.save_screenshot(str(shots / "admin-peers.png"))
        loads = int(css(alice, "#peers-table").get_attribute("data-loads"))
        css(row, "button.retry").click()
        wait_until(alice, lambda: int(css(alice, "#peers-table").get_attribute("data-loads"))
                   > loads, what="the peers view after a retry")
        css(alice, '#peers-table tr[data-peer="b.test"] button.doctor').click()
        wait_until(alice, lambda: css(alice, "#doctor-summary"), what="the doctor's verdict",
                   timeout=60)
        checks = {c.get_attribute("data-name"): c.get_attribute("data-status")
                  for c in all_css(alice, ".doctor-check")}
        assert set(checks) >= {"own_config", "own_descriptor", "peer_reachable", "peer_tls",
                               "peer_descriptor", "protocol_versions", "our_policy",
                               "clock_skew", "their_policy", "key_cache", "queue"}
        assert checks["their_policy"] == "ok" and checks["our_policy"] == "ok"
        alice.save_screenshot(str(shots / "admin-doctor.png"))

        # a message while alice looks elsewhere counts as unread in her room list
        send(bob, "are you there?")
        unread = wait_until(alice, lambda: css(
            alice, f'.room-item[data-room-id="{room_id}"] .count'), what="an unread count")
        assert unread.text == "1"
        css(alice, f'.room-item[data-room-id="{room_id}"]').click()
        wait_until(alice, lambda: message(alice, "are you there?"), what="the unread message")
        dm_count = f'.room-item[data-room-id="{room_id}"] .count'
        wait_until(alice, lambda: not all_css(alice, dm_count), what="the count to clear")

        # -- phone width ------------------------------------------------------------------
        bob.set_window_size(390, 844)
        wait_until(bob, lambda: css(bob, "#members").is_displayed(), what="members, full screen")
        bob.save_screenshot(str(shots / "phone-members.png"))
        css(bob, "#members .panel-head button").click()  # the panel covers the room: close
        wait_until(bob, lambda: not css(bob, "#sidebar").is_displayed(),
                   what="one column on a phone")
        assert css(bob, "#composer-input").is_displayed()
        bob.save_screenshot(str(shots / "phone-room.png"))
        css(bob, "#room-head .back").click()
        wait_until(bob, lambda: css(bob, "#sidebar").is_displayed(), what="the rooms list")
        bob.save_screenshot(str(shots / "phone-rooms.png"))
        css(bob, f'.room-item[data-room-id="{room_id}"]').click()
        wait_until(bob, lambda: css(bob, "#composer-input").is_displayed(),
                   what="the room again")

        # -- b.test goes away and comes back: bob's client says so, then catches up -----
        b.stop()
        wait_until(bob, lambda: css(bob, "#conn.reconnecting"), what="the reconnecting state")
        assert css(bob, "#offline").is_displayed()  # also on a phone, where the sidebar hides
        bob.save_screenshot(str(shots / "phone-reconnecting.png"))
        send(alice, "sent while b.test was down")
        b.start()
        wait_until(bob, lambda: css(bob, "#conn.live"), what="the stream back", timeout=40)
        assert not css(bob, "#offline").is_displayed()
        wait_until(bob, lambda: message(bob, "sent while b.test was down"),
                   what="the message sent during the outage", timeout=60)

        # no script error and no Content-Security-Policy violation on alice's page the
        # whole time: the only errors are the two refusals the test asked for
        expected = ("/v1/me - Failed to load resource: the server responded with a status "
                    "of 401", "/v1/login - Failed to load resource: the server responded "
                    "with a status of 401")
        errors = [e["message"] for e in alice.get_log("browser")
                  if e["level"] == "SEVERE" and not any(x in e["message"] for x in expected)]
        assert errors == []


# -- issue 20: formatting, edit, delete, reactions off, read state ------------------

#: Bodies that must render as text: never HTML, never a link to a bad scheme.
CORPUS = [  # (body, words its text keeps)
    ('<a href="javascript:alert(1)">click</a>', '<a href="javascript:alert(1)">click</a>'),
    ("javascript:alert(document.cookie)", "javascript:alert(document.cookie)"),
    ("[x](javascript:alert(1)) and [y](data:text/html,<script>alert(1)</script>)",
     "[x](javascript:alert(1))"),
    ("data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==", "data:text/html;base64"),
    ("**<img src=x onerror=alert(1)>** `<script>x</script>`", "<img src=x onerror=alert(1)>"),
    ("\u202eevil\u202c \u2066isolate\u2069 ```<b>in code</b>```", "isolate"),
    ("https://ok.example/path?q=<script> and vbscript:msgbox(1)", "vbscript:msgbox(1)"),
]


def test_formatting_edit_delete_and_read_state_across_servers(
        fed: tuple[TlsNet, ServerProcess, ServerProcess, dict[str, str]]) -> None:
    from selenium.webdriver.common.keys import Keys

    net, a, b, tokens = fed
    a_origin = f"https://a.test:{a.port}"
    b_origin = f"https://b.test:{b.port}"
    ctx = net.ssl_context()
    api_a = httpx.Client(base_url=a.url, verify=ctx, timeout=20, headers={"Host": "a.test"})
    api_b = httpx.Client(base_url=b.url, verify=ctx, timeout=20, headers={"Host": "b.test"})
    with browser(["a.test", "b.test"]) as alice, browser(["a.test", "b.test"]) as bob, \
            api_a, api_b:
        for client, token, peer in ((api_a, tokens["alice"], "b.test"),
                                    (api_b, tokens["root_b"], "a.test")):
            r = client.put("/v1/admin/federation/policy", headers=bearer(token),
                           json={"default_mode": "invite_only", "allowed_peers": [peer]})
            assert r.status_code == 200, r.text
        r = api_a.post("/v1/rooms", json={"name": "formats", "federate": True},
                       headers=bearer(tokens["alice"]))
        room_id = r.json()["room_id"]
        r = api_a.post(f"/v1/rooms/{room_id}/invites", json={"fqid": "@bob:b.test"},
                       headers=bearer(tokens["alice"]))
        assert r.status_code == 201, r.text

        def invite_id() -> Any:
            notes = api_b.get("/v1/me/notifications", headers=bearer(tokens["bob"])).json()
            return next((n["invite_id"] for n in notes["data"] if n.get("room_id") == room_id),
                        None)

        iid = wait_until(bob, invite_id, what="bob's invite on b.test")
        r = api_b.post(f"/v1/me/invites/{iid}/accept", headers=bearer(tokens["bob"]))
        assert r.status_code == 200, r.text
        for body in [*(b for b, _ in CORPUS),
                     "**bold** *it* `code` see https://example.org/a_b. ok\n> quoted"]:
            r = api_b.post(f"/v1/rooms/{room_id}/messages", json={"body": body},
                           headers=bearer(tokens["bob"]))
            assert r.status_code == 201, r.text

        sign_in(alice, a_origin, "alice")
        sign_in(bob, b_origin, "bob")
        for d in (alice, bob):
            css(d, f'.room-item[data-room-id="{room_id}"]').click()
        wait_until(alice, lambda: message(alice, "quoted"), what="bob's messages on a")

        # -- the corpus renders as text; only http(s)/mailto links, rel=noopener -------
        assert alice.execute_script("return window.__pwned === undefined")
        for _, words in CORPUS:
            item = wait_until(alice, lambda words=words: message(alice, words),
                              what=f"{words[:20]!r} as text")
            assert not all_css(item, ".body img, .body script, .body b")
        for link in all_css(alice, "#events .body a"):
            assert link.get_attribute("href").split(":")[0] in ("http", "https", "mailto")
            assert link.get_attribute("rel") == "noopener noreferrer"
        hrefs = [x.get_attribute("href") for x in all_css(alice, "#events .body a")]
        assert "https://example.org/a_b" in hrefs  # the trailing dot stays outside
        assert not [h for h in hrefs if "javascript" in h or "data:" in h]
        fmt = message(alice, "quoted")
        assert css(fmt, ".body strong").text == "bold" and css(fmt, ".body em").text == "it"
        assert css(fmt, ".body code").text == "code"
        assert css(fmt, ".body blockquote").text == "quoted"
        code = css(message(alice, "isolate"), ".body pre code")
        assert text_of(alice, code) == "<b>in code</b>"

        # -- alice's own message: ↑ edits it, bob sees the new words ---------------
        send(alice, "a first draft")
        wait_until(bob, lambda: message(bob, "a first draft"), what="the draft on b")
        box = css(alice, "#composer-input")
        box.send_keys(Keys.ARROW_UP)
        assert box.get_attribute("value") == "a first draft"
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys("the final words")
        box.send_keys(Keys.ENTER)
        edited = wait_until(bob, lambda: message(bob, "the final words"), what="the edit on b")
        assert css(edited, ".edited").text == "(edited)"
        assert not message(bob, "a first draft")

        # -- bob reacts; pressing his reaction takes it off, on both servers --------
        hover_click(bob, edited, ".react-button")
        css(bob, '.picker .pick[data-key="🎉"]').click()
        wait_until(alice, lambda: all_css(message(alice, "the final words"),
                                          '.reaction[data-key="🎉"]'), what="🎉 on a")
        chip = wait_until(bob, lambda: all_css(message(bob, "the final words"),
                                               '.reaction[data-key="🎉"]'), what="🎉 on b")
        assert chip[0].get_attribute("aria-pressed") == "true"
        chip[0].click()
        wait_until(alice, lambda: not all_css(message(alice, "the final words"),
                                              '.reaction[data-key="🎉"]'),
                   what="🎉 off on a")

        # -- alice deletes it (confirmed): a tombstone on b -------------------------
        alice.execute_script("window.confirm = () => true")
        hover_click(alice, message(alice, "the final words"), ".delete-button")
        wait_until(bob, lambda: not message(bob, "the final words")
                   and all_css(bob, "#events .msg.deleted"), what="the tombstone on b")
        assert "message deleted" in css(bob, "#events .msg.deleted").text

        # -- typing shows on the other server ----------------------------------------
        css(bob, "#composer-input").send_keys("typing away")
        wait_until(alice, lambda: "is typing" in css(alice, "#typing").text,
                   what="bob typing, on a")
        assert "Bob <i>the</i> builder" in text_of(alice, css(alice, "#typing"))
        css(bob, "#composer-input").send_keys(Keys.CONTROL, "a")
        css(bob, "#composer-input").send_keys(Keys.DELETE)

        # -- alice's tab hidden: a mention counts in the title and on the desktop -----
        alice.execute_script("""
            Object.defineProperty(document, 'visibilityState',
                                  {get: () => 'hidden', configurable: true});
            window.__notes = [];
            window.Notification = function (title, opts) {
              window.__notes.push([title, opts.body]);
            };
            window.Notification.permission = 'granted';""")
        r = api_b.post(f"/v1/rooms/{room_id}/messages", headers=bearer(tokens["bob"]),
                       json={"body": "@alice:a.test look", "mentions": ["@alice:a.test"]})
        assert r.status_code == 201, r.text
        wait_until(alice, lambda: alice.title == "(1) swfed", what="the title count")
        notes = alice.execute_script("return window.__notes")
        assert notes and notes[0][1] == "@alice:a.test look"
        alice.execute_script("""
            Object.defineProperty(document, 'visibilityState',
                                  {get: () => 'visible', configurable: true});
            document.dispatchEvent(new Event('visibilitychange'));""")
        wait_until(alice, lambda: alice.title == "swfed", what="the title, read")

        # -- read state is the server's: alice read everything, bob's room list agrees
        def alice_unread() -> Any:
            rooms = api_a.get("/v1/me/rooms", headers=bearer(tokens["alice"])).json()["data"]
            room = next(r for r in rooms if r["room_id"] == room_id)
            return room["unread"] == 0 and room["read_seq"] > 0

        wait_until(alice, alice_unread, what="alice's read marker on a.test")
        assert alice.execute_script(
            "return Object.keys(localStorage).filter(k => k.includes('read:')).length") == 0
