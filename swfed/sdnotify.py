"""systemd's readiness protocol (sd_notify), written out: one datagram per state.

Under ``Type=notify`` systemd passes ``$NOTIFY_SOCKET``, an ``AF_UNIX``
datagram socket: a file system path, or an abstract name written with a
leading ``@`` (sent as a leading NUL byte). Each datagram is
newline-separated ``KEY=VALUE`` lines:

- ``READY=1`` once the database is migrated and every listener accepts
  connections, so ``systemctl start`` returns only then and units ordered
  after us find the port open;
- ``WATCHDOG=1`` every half ``$WATCHDOG_USEC`` from a task of the event
  loop: a wedged loop stops pinging and systemd restarts the service
  (``WatchdogSec=`` in the unit);
- ``STOPPING=1`` when shutdown begins, so systemd does not take the
  draining server for a hung one.

Outside systemd (no ``$NOTIFY_SOCKET``) every call does nothing, so the
server runs the same anywhere. Only ``swfed.server`` calls this module: I/O
at the edge, nothing in ``core``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

import trio


def _address(env: Mapping[str, str]) -> str | None:
    path = env.get("NOTIFY_SOCKET", "")
    if not path or not (path.startswith(("/", "@"))):
        return None  # unset, or a transport we do not speak (vsock)
    return "\0" + path[1:] if path.startswith("@") else path


def notify(*lines: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``lines`` as one datagram; False if there is no socket or it failed.

    Never raises and never blocks: a full or vanished socket only means
    systemd hears nothing, which must not stop the server.
    """
    address = _address(os.environ if env is None else env)
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.sendto("\n".join(lines).encode(), address)
    except OSError:
        return False
    return True


def watchdog_interval(env: Mapping[str, str] | None = None,
                      pid: int | None = None) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings: half of ``$WATCHDOG_USEC``.

    None when the watchdog is off: no ``$WATCHDOG_USEC`` (or not a positive
    number), no ``$NOTIFY_SOCKET``, or ``$WATCHDOG_PID`` naming another
    process (the variable was inherited, not meant for us).
    """
    env = os.environ if env is None else env
    if _address(env) is None:
        return None
    owner = env.get("WATCHDOG_PID", "").strip()
    if owner and owner != str(os.getpid() if pid is None else pid):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2_000_000 if usec > 0 else None


async def run_watchdog(interval: float,
                       task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Ping every ``interval`` seconds, the first at once, until cancelled."""
    task_status.started()
    while True:
        notify("WATCHDOG=1")
        await trio.sleep(interval)
