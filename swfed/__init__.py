"""swfed: a small self-hosted chat server whose core is federation.

Packages (DESIGN §9):

- ``swfed.core``: pure logic, no I/O (canonical JSON, signing, ids and
  canonical server names, events, policy decisions, backoff schedule, rate
  limits, errors).
- ``swfed.storage``: SQLite access and migrations; the only place with SQL.
- ``swfed.federation``: keys, outbound client, sender, inbound handlers.
- ``swfed.api``: the local REST API (me, rooms, admin, stream, search).
- ``swfed.housekeeping``: the retention task (DESIGN §1).
"""

__version__ = "0.1.0"
