"""Prometheus metrics of the coordinator, on a registry of its own (one per instance)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

logger = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass
class CoordinatorMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.rounds_completed = Counter(
            "cipherfed_rounds_completed", "Rounds aggregated and applied", registry=r
        )
        self.rounds_retried = Counter(
            "cipherfed_round_retries", "Round attempts that ended with fewer than K", registry=r
        )
        self.current_round = Gauge("cipherfed_current_round", "Round now open", registry=r)
        self.participants = Gauge(
            "cipherfed_round_participants", "Updates accepted in the open round", registry=r
        )
        self.enrolled = Gauge("cipherfed_enrolled_sites", "Sites enrolled", registry=r)
        self.bytes_received = Counter(
            "cipherfed_update_bytes_received", "Ciphertext bytes accepted", registry=r
        )
        self.bytes_sent = Counter(
            "cipherfed_model_bytes_sent", "Model bytes streamed to participants", registry=r
        )
        self.updates = Counter("cipherfed_updates", "Upload outcomes", ["outcome"], registry=r)
        self.upload_latency = Histogram(
            "cipherfed_upload_seconds",
            "Time to receive and verify one upload",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.aggregation_latency = Histogram(
            "cipherfed_aggregation_seconds",
            "Homomorphic weighted sum per round",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.decryption_latency = Histogram(
            "cipherfed_decryption_seconds",
            "Key-holder round trip per round",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.round_latency = Histogram(
            "cipherfed_round_seconds",
            "Round open to model applied",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )

    def serve(self, port: int, addr: str = "127.0.0.1") -> tuple[WSGIServer, int]:
        """Serve ``/metrics`` over HTTP; port 0 picks a free port. Returns (server, port)."""
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        bound = int(server.server_port)
        logger.info("metrics on http://%s:%d/metrics", addr, bound)
        return server, bound
