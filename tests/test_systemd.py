"""systemd: the sd_notify protocol against a real server, and the units' hardening.

The server is a real ``python -m swfed`` with ``$NOTIFY_SOCKET`` pointing at
a datagram socket this test binds (an abstract name, as systemd uses) and
``$WATCHDOG_USEC`` set: READY=1 must come only once the port accepts
connections, then WATCHDOG=1 pings, then STOPPING=1 on SIGTERM.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from swfed import sdnotify
from swfed.cli import build_parser
from tests.harness import ServerProcess, wait_for

REPO = Path(__file__).parent.parent
UNITS = REPO / "contrib" / "systemd"
MAX_EXPOSURE = 1.5


class NotifyListener:
    """A datagram socket standing in for systemd's; notes whether the port accepted."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.name = f"@swfed-test-{os.getpid()}-{time.monotonic_ns()}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name[1:])
        self.sock.settimeout(0.2)
        self.messages: list[tuple[str, bool]] = []  # (datagram, port accepted right then)
        self._stop = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _accepts(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=2).close()
            return True
        except OSError:
            return False

    def _read(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            text = data.decode()
            self.messages.append((text, "READY=1" in text and self._accepts()))

    def lines(self) -> list[str]:
        return [m for m, _ in self.messages]

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()


async def test_ready_after_listening_then_watchdog_then_stopping(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "a", "a.test")
    listener = NotifyListener(server.port)
    server.env.update({"NOTIFY_SOCKET": listener.name, "WATCHDOG_USEC": "200000"})
    try:
        server.start()
        await wait_for(lambda: sum(m == "WATCHDOG=1" for m in listener.lines()) >= 3,
                       timeout=10, what="three watchdog pings")
        assert server.stop() == 0
        await wait_for(lambda: any(m.startswith("STOPPING=1") for m in listener.lines()),
                       timeout=5, what="STOPPING=1")
    finally:
        server.kill()
        listener.close()
    kinds = [m.split("\n")[0] for m in listener.lines()]
    first_ready = kinds.index("READY=1")
    assert first_ready == 0 and kinds.count("READY=1") == 1, kinds
    text, accepted = listener.messages[first_ready]
    assert accepted, "READY=1 came before the port accepted connections"
    assert f"STATUS=listening on http://127.0.0.1:{server.port}" in text
    stopping = kinds.index("STOPPING=1")
    assert set(kinds[1:stopping]) == {"WATCHDOG=1"} and stopping >= 4, kinds


def test_notify_without_socket_and_watchdog_settings(tmp_path: Path) -> None:
    assert sdnotify.notify("READY=1", env={}) is False
    assert sdnotify.watchdog_interval({}) is None
    path = str(tmp_path / "n.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        assert sdnotify.notify("READY=1", "STATUS=x", env={"NOTIFY_SOCKET": path})
        assert sock.recv(100) == b"READY=1\nSTATUS=x"
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000"}
    assert sdnotify.watchdog_interval(env) == 15.0
    assert sdnotify.watchdog_interval({**env, "WATCHDOG_PID": "1"}, pid=2) is None
    assert sdnotify.watchdog_interval({**env, "WATCHDOG_PID": "2"}, pid=2) == 15.0
    assert sdnotify.watchdog_interval({**env, "WATCHDOG_USEC": "0"}) is None
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "30000000"}) is None
    # a vanished socket is no error for the server
    assert sdnotify.notify("WATCHDOG=1", env={"NOTIFY_SOCKET": path + ".gone"}) is False


def _units(tmp_path: Path) -> list[Path]:
    # The template is analysed as an instance, the way systemd loads it.
    instance = tmp_path / "swfed@8449.service"
    shutil.copy(UNITS / "swfed@.service", instance)
    return [UNITS / "swfed.service", instance]


def test_units_run_swfed_with_arguments_it_takes(tmp_path: Path) -> None:
    for unit in _units(tmp_path):
        text = unit.read_text()
        assert "\nType=notify\n" in text and "\nWatchdogSec=" in text
        [exec_start] = re.findall(r"^ExecStart=(.*)$", text, re.M)
        argv = shlex.split(exec_start.replace("%I", "8449").replace("%i", "8449"))
        assert argv[0] == "/usr/local/bin/swfed"
        args = build_parser().parse_args(argv[1:])
        assert args.command is None  # runs the server


@pytest.mark.skipif(shutil.which("systemd-analyze") is None and not os.environ.get("CI"),
                    reason="needs systemd-analyze (Debian's systemd package; .ci/run installs "
                    "it, and in CI its absence fails)")
def test_units_exposure_at_most_1_5(tmp_path: Path) -> None:
    for unit in _units(tmp_path):
        out = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(unit)],
                             capture_output=True, text=True, timeout=60)
        match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out.stdout)
        assert match, out.stdout + out.stderr
        assert float(match.group(1)) <= MAX_EXPOSURE, out.stdout
