"""Process metrics in the Prometheus text exposition format (version 0.0.4).

A few counters and histograms kept in memory since the process started, and
gauges read at scrape time (queue depth, backoff) by ``swfed.api.ops``. Every
series carries a ``tenant`` label so one tenant's admin is shown only its
own series. Written here rather than pulling in a client library: the
format is a dozen lines, and we need per-tenant filtering it does not do.

=================================================  =========  ===================
name                                               type       labels
=================================================  =========  ===================
swfed_federation_events_sent_total                 counter    tenant, peer
swfed_federation_events_received_total             counter    tenant, peer
swfed_federation_events_rejected_total             counter    tenant, peer, reason
swfed_federation_events_refused_by_peer_total      counter    tenant, peer, reason
swfed_federation_send_failures_total               counter    tenant, peer, reason
swfed_federation_delivery_latency_seconds          histogram  tenant, peer
swfed_federation_queue_depth                       gauge      tenant, peer
swfed_federation_backoff_failures                  gauge      tenant, peer
swfed_federation_backoff_retry_in_seconds          gauge      tenant, peer
swfed_federation_requests_refused_total            counter    tenant, reason
swfed_rate_limited_total                           counter    tenant, kind
swfed_media_uploads_total                          counter    tenant
swfed_media_upload_bytes_total                     counter    tenant
swfed_media_uploads_refused_total                  counter    tenant, reason
swfed_media_downloads_total                        counter    tenant
swfed_media_download_bytes_total                   counter    tenant
swfed_media_fetches_total                          counter    tenant, peer, outcome
=================================================  =========  ===================

Labels hold only bounded values: ``peer`` is a peer we know (a verified
origin, or one in our peers table or policy lists); requests refused before
their origin was verified are counted by reason alone
(``swfed_federation_requests_refused_total``), so a stranger inventing names
cannot add series.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable

Labels = tuple[tuple[str, str], ...]

#: Send-to-delivered latency buckets (seconds): loopback to a peer that was down.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
                   1800.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Labels, extra: Labels = ()) -> str:
    items = labels + extra
    if not items:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in items) + "}"


def _number(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class Family:
    def __init__(self, name: str, kind: str, help_text: str) -> None:
        self.name = name
        self.kind = kind
        self.help = help_text

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def samples(self, tenant: str | None) -> list[str]:
        raise NotImplementedError

    def render(self, tenant: str | None) -> list[str]:
        return self.header() + self.samples(tenant)


def _visible(labels: Labels, tenant: str | None) -> bool:
    return tenant is None or dict(labels).get("tenant") == tenant


class Counter(Family):
    def __init__(self, name: str, help_text: str) -> None:
        super().__init__(name, "counter", help_text)
        self.values: dict[Labels, float] = {}

    def inc(self, amount: float = 1, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        self.values[key] = self.values.get(key, 0) + amount

    def samples(self, tenant: str | None) -> list[str]:
        return [f"{self.name}{_labels(k)} {_number(v)}" for k, v in sorted(self.values.items())
                if _visible(k, tenant)]


class Histogram(Family):
    def __init__(self, name: str, help_text: str, buckets: Iterable[float]) -> None:
        super().__init__(name, "histogram", help_text)
        self.buckets = tuple(sorted(buckets)) + (math.inf,)
        self.series: dict[Labels, tuple[list[int], list[float]]] = {}

    def observe(self, value: float, **labels: str) -> None:
        self.observe_many([value], **labels)

    def observe_many(self, values: list[float], **labels: str) -> None:
        """Observe each of ``values`` (a batch's: the labels are looked up once)."""
        if not values:
            return  # no series for labels nothing was observed under
        key = tuple(sorted(labels.items()))
        counts, total = self.series.setdefault(key, ([0] * len(self.buckets), [0.0]))
        first = [0] * len(self.buckets)  # how many values have bucket i as their first
        for value in values:
            first[bisect.bisect_left(self.buckets, value)] += 1
        running = 0
        for i, n in enumerate(first):  # cumulative: a value counts in every bucket above
            running += n
            counts[i] += running
        total[0] += sum(values)

    def samples(self, tenant: str | None) -> list[str]:
        out = []
        for key, (counts, total) in sorted(self.series.items()):
            if not _visible(key, tenant):
                continue
            for bound, count in zip(self.buckets, counts, strict=True):
                out.append(f"{self.name}_bucket{_labels(key, (('le', _number(bound)),))} "
                           f"{count}")
            out.append(f"{self.name}_sum{_labels(key)} {_number(total[0])}")
            out.append(f"{self.name}_count{_labels(key)} {counts[-1]}")
        return out


class Gauge(Family):
    """Set fresh for each scrape from what the server holds now."""

    def __init__(self, name: str, help_text: str) -> None:
        super().__init__(name, "gauge", help_text)
        self.values: dict[Labels, float] = {}

    def set_all(self, values: dict[Labels, float]) -> None:
        self.values = values

    def samples(self, tenant: str | None) -> list[str]:
        return [f"{self.name}{_labels(k)} {_number(v)}" for k, v in sorted(self.values.items())
                if _visible(k, tenant)]


class Metrics:
    """The process's metrics; one instance hangs on the app state."""

    def __init__(self) -> None:
        self.sent = Counter("swfed_federation_events_sent_total",
                            "Events a peer confirmed it stored (or already had).")
        self.received = Counter("swfed_federation_events_received_total",
                                "Events from a peer, verified and stored.")
        self.rejected = Counter("swfed_federation_events_rejected_total",
                                "Requests and events we refused, by reason code.")
        self.refused_by_peer = Counter("swfed_federation_events_refused_by_peer_total",
                                       "Events a peer refused for good, by its reason code.")
        self.send_failures = Counter("swfed_federation_send_failures_total",
                                     "Failed send attempts (the batch stays queued).")
        self.latency = Histogram("swfed_federation_delivery_latency_seconds",
                                 "From queueing an event to the peer confirming it.",
                                 LATENCY_BUCKETS)
        self.queue_depth = Gauge("swfed_federation_queue_depth",
                                 "Events waiting in the outbox for a peer.")
        self.backoff_failures = Gauge("swfed_federation_backoff_failures",
                                      "Consecutive failed sends to a peer (0: healthy).")
        self.refused_unauthenticated = Counter(
            "swfed_federation_requests_refused_total",
            "Federation requests refused before their origin was verified, by reason.")
        self.rate_limited = Counter("swfed_rate_limited_total",
                                    "Requests answered 429 SW_RATE_LIMITED, by limit.")
        self.retry_in = Gauge("swfed_federation_backoff_retry_in_seconds",
                              "Seconds until the next attempt while backing off (0: now).")
        self.media_uploads = Counter("swfed_media_uploads_total", "Files uploaded and kept.")
        self.media_upload_bytes = Counter("swfed_media_upload_bytes_total",
                                          "Bytes of the files uploaded and kept.")
        self.media_refused = Counter("swfed_media_uploads_refused_total",
                                     "Uploads refused (too large, over quota, bad type...).")
        self.media_downloads = Counter("swfed_media_downloads_total",
                                       "Files (or ranges of them) served to clients and peers.")
        self.media_download_bytes = Counter("swfed_media_download_bytes_total",
                                            "Bytes of files served to clients and peers.")
        self.media_fetches = Counter("swfed_media_fetches_total",
                                     "Fetches of peers' files: ok, failed, mismatch.")

    def families(self) -> list[Family]:
        return [self.sent, self.received, self.rejected, self.refused_by_peer,
                self.send_failures, self.latency, self.queue_depth, self.backoff_failures,
                self.retry_in, self.refused_unauthenticated, self.rate_limited,
                self.media_uploads, self.media_upload_bytes, self.media_refused,
                self.media_downloads, self.media_download_bytes, self.media_fetches]

    def render(self, tenant: str | None = None) -> str:
        """The exposition text; only ``tenant``'s series unless None."""
        lines: list[str] = []
        for family in self.families():
            lines += family.render(tenant)
        return "\n".join(lines) + "\n"
