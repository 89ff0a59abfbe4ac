"""Storage: the only package with SQL (DESIGN §6, §9).

``db.py`` is the engine (writer thread with group commit, read pool,
online backup); ``migrations.py`` the numbered schema; the other modules
hold sync ``*_txn(conn, …)`` functions, one transaction each, that
``Database.write``/``Database.read`` run on a database thread and the CLI
runs directly. Nothing outside this package builds SQL.
"""
