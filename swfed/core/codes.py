"""Every ``SW_…`` code swfed answers with, in one table: its usual HTTP status and
what it means. A test checks that every code the package raises is listed here
(tests/core/test_codes.py), so a client, a peer or an admin reading a code can
find it, and no two places invent the same refusal under two names.

The status is the one the code is normally answered with; a few codes are
raised with another where the context decides (a peer's code relayed as
``RemoteRefusal`` keeps the peer's own).
"""

from __future__ import annotations

CODES: dict[str, tuple[int, str]] = {
    # -- requests and values ------------------------------------------------------
    "SW_BAD_REQUEST": (400, "malformed request"),
    "SW_BAD_JSON": (400, "the body is not a JSON object"),
    "SW_BAD_TYPE": (400, "a field has the wrong type"),
    "SW_BAD_VALUE": (400, "a field has a value out of range or empty"),
    "SW_BAD_PARAM": (400, "a query parameter is malformed"),
    "SW_BAD_QUERY": (400, "a search query without words"),
    "SW_BAD_ID": (400, "an id (room, event, participant, invite) is malformed"),
    "SW_BAD_BASE64": (400, "a signature or key is not base64"),
    "SW_MISSING_FIELD": (400, "a required field is missing"),
    "SW_UNKNOWN_FIELD": (400, "a field this call does not take"),
    "SW_BAD_HOST": (400, "the Host header is no server name"),
    "SW_BAD_SERVER_NAME": (400, "a server name given to the CLI or API is not one"),
    "SW_BAD_POLICY": (400, "a federation policy field has a bad value"),
    "SW_BAD_PASSWORD": (400, "a password too short, or the two entries differ"),
    "SW_REQUEST_TOO_LARGE": (413, "the body is over the configured limit"),
    "SW_EVENT_TOO_LARGE": (413, "the event is over the size an event may have"),
    "SW_REQUEST_TIMEOUT": (408, "the request did not arrive in time"),
    "SW_METHOD_NOT_ALLOWED": (405, "this path does not take that method"),
    "SW_NOT_FOUND": (404, "no such route or file"),
    "SW_CONFLICT": (409, "already exists, or in the wrong state"),
    "SW_RATE_LIMITED": (429, "too many requests: wait Retry-After seconds"),
    "SW_INTERNAL": (500, "a bug: the server log has the details"),
    "SW_UNAVAILABLE": (503, "a dependency is down: try again"),
    "SW_STORAGE_UNAVAILABLE": (503, "the database refuses writes (disk full, read-only, I/O)"),
    "SW_NO_DATABASE": (503, "the data directory has no database yet"),
    # -- who you are ----------------------------------------------------------------
    "SW_UNAUTHORIZED": (401, "no token, or an unknown one"),
    "SW_BAD_TOKEN": (401, "the token belongs to another server or has ended"),
    "SW_LOGIN_FAILED": (401, "wrong user name or password"),
    "SW_CSRF": (403, "a cookie request that changes something lacks the CSRF header"),
    "SW_FORBIDDEN": (403, "authenticated but not allowed"),
    "SW_NOT_ADMIN": (403, "needs a tenant admin"),
    "SW_NOT_ROOM_ADMIN": (403, "needs the room's creator or a tenant admin"),
    # -- rooms, users, invites --------------------------------------------------------
    "SW_ROOM_NOT_FOUND": (404, "no such room that you are a member of"),
    "SW_EVENT_NOT_FOUND": (404, "no such event in the room"),
    "SW_USER_NOT_FOUND": (404, "no such user"),
    "SW_USER_EXISTS": (409, "that user exists already"),
    "SW_TENANT_NOT_FOUND": (404, "no such tenant"),
    "SW_TENANT_EXISTS": (409, "that tenant exists already"),
    "SW_INVITE_NOT_FOUND": (404, "no such invite"),
    "SW_INVITE_NOT_PENDING": (409, "the invite was answered or cancelled already"),
    "SW_INVITE_AMBIGUOUS": (409, "two rooms hold invites under that id: give ?room_id="),
    "SW_ALREADY_MEMBER": (409, "already a member of the room"),
    "SW_NOT_HOST": (403, "only the room's host may do this"),
    "SW_NOT_FOREIGN": (400, "a federated DM needs someone of another server"),
    "SW_BACKFILL_LOCAL_ROOM": (400, "backfill is for rooms hosted elsewhere"),
    "SW_BACKUP_EXISTS": (409, "the backup file exists: pass --force"),
    "SW_KEY_EXISTS": (409, "a signing key exists: rotate it instead"),
    "SW_NO_KEY": (503, "this server has no signing key yet"),
    "SW_CALLS_NOT_CONFIGURED": (503, "the room's host has no LiveKit configured"),
    # -- federation: ours -------------------------------------------------------------
    "SW_FED_ERROR": (403, "a federation refusal without a more precise code"),
    "SW_FED_POLICY": (403, "our federation policy refuses"),
    "SW_FED_DISABLED": (403, "federation is switched off for this tenant"),
    "SW_FED_CLOSED": (403, "the federation policy is closed"),
    "SW_FED_PEER_DENIED": (403, "the peer is in denied_peers"),
    "SW_FED_PEER_UNKNOWN": (403, "the peer is not in allowed_peers under invite_only"),
    "SW_FED_ROOM_NOT_FEDERATABLE": (403, "the room's type cannot federate"),
    "SW_FED_ROOM_NOT_FEDERATED": (403, "the room's federate flag is off"),
    "SW_FED_ROOM_FULL": (403, "max_foreign_participants_per_room reached"),
    "SW_FED_BACKFILL_REFUSED": (403, "the backfill policy refuses history"),
    "SW_FED_SIGNATURE_MISMATCH": (401, "a signature, key or clock we cannot accept"),
    "SW_FED_REPLAY": (409, "a signed request seen before"),
    "SW_FED_PROTOCOL_VERSION": (502, "no protocol version in common"),
    "SW_FED_BAD_SERVER_NAME": (400, "a server name not in canonical form"),
    "SW_FED_BAD_REQUEST": (400, "a malformed federation request"),
    "SW_FED_BAD_EVENT": (400, "a malformed or out-of-bounds event"),
    "SW_FED_EVENT_CONFLICT": (409, "an event id already taken by another event"),
    "SW_FED_NOT_HOST": (403, "only the room's host writes into it"),
    "SW_FED_NOT_MEMBER": (403, "the server or user is not a member of the room"),
    "SW_FED_NOT_INVITED": (403, "a join without an invite"),
    "SW_FED_UNKNOWN_ROOM": (404, "no such room here"),
    "SW_FED_USER_NOT_FOUND": (404, "no such user on this server"),
    "SW_FED_PEER_NOT_FOUND": (404, "no such peer known here"),
    "SW_FED_NO_KEY": (503, "this server has no federation key"),
    # -- federation: reaching the peer (transient) ------------------------------------
    "SW_FED_PEER_UNREACHABLE": (503, "the peer could not be reached"),
    "SW_FED_PEER_TIMEOUT": (504, "the peer did not answer in time"),
    "SW_FED_TLS_FAILED": (502, "the peer's TLS certificate was refused"),
    "SW_FED_PRIVATE_ADDRESS": (502, "the peer resolves to a private address not allowed"),
    "SW_FED_RESPONSE_TOO_LARGE": (502, "the peer's answer is over max_response_bytes"),
    "SW_FED_BAD_RESPONSE": (502, "the peer's answer is malformed"),
    "SW_FED_BAD_DESCRIPTOR": (502, "the peer's descriptor is missing or refused"),
}
