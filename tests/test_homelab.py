"""docs/admin.md §13 "Two servers in your homelab", run as a newcomer would.

Every ``bash`` block of the section runs as written, one command at a time
in one shell state (the variables and the working directory carry over),
with the installed ``swfed`` on ``PATH``. Three things differ from a person
at a keyboard, and only these: the ports 8448/8449 are replaced by free ones
(other servers may hold those here); each ``swfed --config X.toml`` the doc
starts "in a terminal of its own" runs in the background until it logs
``server.listening``; and a command that asks for a password gets it on
stdin. Then the test does what the doc leaves to the person: bob accepts
alice's DM and his message reaches her server.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.harness import free_port, wait_for

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")

DOC = Path(__file__).parent.parent / "docs" / "admin.md"
SECTION = "## 13. Two servers in your homelab"
PASSWORD = "homelab-password-1"

#: Run after each command: keep the working directory and the (upper-case)
#: variables the commands set, for the next command.
SAVE = r"""
set +e
pwd > "$STATE/cwd"
__new=$(comm -13 <(echo "$__base") <(compgen -v | sort) | grep -E '^[A-Z][A-Z0-9_]*$')
if [ -n "$__new" ]; then declare -p $__new > "$STATE/vars.sh"; fi
"""


def section_commands(ports: dict[str, int]) -> list[str]:
    text = DOC.read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    body = text[start:end if end > 0 else None]
    for old, new in ports.items():
        body = body.replace(old, str(new))
    commands: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", body, re.S):
        current: list[str] = []
        heredoc: str | None = None
        for line in block.splitlines():
            current.append(line)
            if heredoc is not None:
                if line == heredoc:
                    heredoc = None
                else:
                    continue
            elif (m := re.search(r"<<'?(\w+)'?", line)):
                heredoc = m.group(1)
                continue
            if line.endswith("\\"):
                continue
            if "\n".join(current).strip():
                commands.append("\n".join(current))
            current = []
    assert commands, f"no bash blocks in {SECTION!r}"
    return commands


class Shell:
    """Commands run one by one in bash, sharing variables and the working directory."""

    def __init__(self, root: Path) -> None:
        self.state = root / ".shell"
        self.state.mkdir()
        (self.state / "cwd").write_text(str(root))
        self.env = dict(os.environ)
        for name in ("SWFED_CONFIG", "SCAIWAVE_SERVER_NAME", "ALICE", "BOB"):
            self.env.pop(name, None)
        self.env["PATH"] = f"{Path(sys.executable).parent}:{self.env['PATH']}"
        self.env["STATE"] = str(self.state)
        self.servers: list[tuple[subprocess.Popen[bytes], Path]] = []

    def cwd(self) -> Path:
        return Path((self.state / "cwd").read_text().strip())

    def run(self, command: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        script = ('__base=$(compgen -v | sort)\ncd "$(cat "$STATE/cwd")"\n'
                  '[ -f "$STATE/vars.sh" ] && source "$STATE/vars.sh"\n'
                  f"set -eo pipefail\n{command}\n{SAVE}")
        return subprocess.run(["bash", "-c", script], input=stdin, capture_output=True,
                              env=self.env, timeout=60)

    def var(self, name: str) -> str:
        out = self.run(f'printf %s "${name}"')
        return out.stdout.decode()

    def start_server(self, command: str) -> Path:
        log = self.cwd() / f"{len(self.servers)}.log"
        with log.open("wb") as sink:
            proc = subprocess.Popen(command.split(), cwd=self.cwd(), env=self.env,
                                    stdout=subprocess.DEVNULL, stderr=sink)
        self.servers.append((proc, log))
        return log

    def stop_servers(self) -> None:
        for proc, _ in self.servers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _ in self.servers:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def curl(shell: Shell, *args: str) -> Any:
    out = subprocess.run(["curl", "-sS", "--fail-with-body", "--cacert",
                          str(shell.cwd() / "certs" / "ca.pem"), *args],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, f"curl {args}: {out.stdout}{out.stderr}"
    return json.loads(out.stdout)


async def test_two_servers_in_your_homelab_verbatim(tmp_path: Path) -> None:
    port_a, port_b = free_port(), free_port()
    commands = section_commands({"8448": port_a, "8449": port_b})
    shell = Shell(tmp_path)
    try:
        for command in commands:
            if re.fullmatch(r"swfed --config \S+\.toml", command):
                log = shell.start_server(command)
                proc = shell.servers[-1][0]
                await wait_for(lambda lg=log, p=proc: '"server.listening"' in lg.read_text()
                               or p.poll() is not None, timeout=30, what=command)
                assert proc.poll() is None, log.read_text()[-3000:]
                continue
            stdin = f"{PASSWORD}\n".encode() if "--password" in command else b""
            out = shell.run(command, stdin)
            assert out.returncode == 0, (f"{command}\n-> {out.returncode}\n"
                                         f"{out.stdout.decode()}\n{out.stderr.decode()}")
            if " doctor " in command:
                assert "no problem found" in out.stdout.decode(), out.stdout.decode()
        a = f"https://a.localhost:{port_a}"
        b = f"https://b.localhost:{port_b}"
        alice, bob = shell.var("ALICE"), shell.var("BOB")
        assert alice.startswith("swt_") and bob.startswith("swt_")
        assert oct((shell.cwd() / "certs" / "ca.key").stat().st_mode & 0o777) == "0o600"

        # What the doc leaves to the person in the browser: bob accepts, and writes.
        def invite() -> dict[str, Any] | None:
            notes = curl(shell, f"{b}/v1/me/notifications", "-H", f"Authorization: Bearer {bob}")
            return next((n for n in notes["data"] if n["type"] == "invite"), None)

        note = await wait_for(invite, timeout=20, what="alice's DM invite at bob's")
        room_id = note["room_id"]
        curl(shell, "-X", "POST", f"{b}/v1/me/invites/{note['invite_id']}/accept",
             "-H", f"Authorization: Bearer {bob}")
        curl(shell, "-X", "POST", f"{b}/v1/rooms/{room_id}/messages",
             "-H", f"Authorization: Bearer {bob}", "-d", '{"body": "hi alice"}')

        def arrived() -> bool:
            page = curl(shell, f"{a}/v1/rooms/{room_id}/messages",
                        "-H", f"Authorization: Bearer {alice}")
            return any(e["content"].get("body") == "hi alice" for e in page["data"])

        await wait_for(arrived, timeout=20, what="bob's message on alice's server")
    finally:
        shell.stop_servers()
    for proc, log in shell.servers:
        assert proc.returncode == 0, log.read_text()[-3000:]
