"""Storage: the only package with SQL (DESIGN §6, §9).

``db.py`` is the engine (writer thread with group commit, read pool,
online backup); ``migrations.py`` the numbered schema. The other modules
hold sync ``*_txn(conn, …)`` functions that ``Database.write``/``Database.read``
run on a database thread and the CLI runs directly; every transaction is
one of them (``grep -rn "def .*_txn" swfed/storage`` lists them all, and a
test keeps any from living elsewhere). They take a :class:`~swfed.storage.conn.Conn`,
never a driver type: nothing outside this package imports a driver. What a
write leaves for others -- outbox rows, a moved stream, a gap to repair --
it records on ``conn.touched`` (``touched.py``), and the commit hook
(``Database.on_commit``) wakes exactly that. Nothing outside this
package builds SQL, and no function here decides room rules: those are
:mod:`swfed.core.rooms`.

One concern per module:

- ``rooms``, ``members``, ``events``, ``invites``, ``notifications``,
  ``stream``, ``search``: the room tables, read and written, nothing decided;
- ``room_writes``: the room's named write transactions (a local
  user's action, a peer's ``/send``, a backfill), which read the facts, ask
  ``core.rooms`` and write the outcome through the modules above;
- ``delivery``: what a peer answered for a batch we sent;
- ``peers`` (outbox, per-peer state, counters), ``keys``, ``tenants``,
  ``policy``, ``audit``: the rest of a tenant's state;
- ``refusals``: which peer names a tenant knows (bounded refusal records);
- ``retention``: the housekeeping task's batched deletes.
"""
