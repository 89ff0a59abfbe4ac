"""Pure logic: no I/O lives here.

Nothing in this package may import trio, httpx, sqlite3, quart or hypercorn
(``tests/core/test_purity.py`` checks it). Functions take plain values
(dicts, bytes, ints, ``now`` as milliseconds) and return plain values, so
they are tested with exact inputs and no clock.
"""
