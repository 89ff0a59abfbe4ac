"""Federation (DESIGN §3-§6): keys, the outbound client, the sender, inbound handlers.

- ``keys``: our signing keys, the key ring and the key scheduler.
- ``client``: every server-to-server HTTP request (TLS, addresses, limits).
- ``service``: peers' keys, signature checks, signed requests.
- ``sender``: durable, ordered delivery from the outbox, one queue per peer.
- ``inbound``: the descriptor and the ``/_scaiwave/federation/v1`` endpoints.

Pure decisions (policy, descriptor checks, signing, backoff) live in
``swfed.core``; SQL lives in ``swfed.storage``.
"""
