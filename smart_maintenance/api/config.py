"""The API server's settings (command-line options of `smart-maintenance serve`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ApiConfig:
    host: str = "127.0.0.1"  # loopback unless told otherwise
    port: int = 8000
    max_body_bytes: int = 8 * 1024 * 1024  # a larger request is refused with 413 before it is read
    rate_per_s: float = 50.0  # per key, sustained
    burst: int = 200  # per key, at once
    cors_origins: tuple[str, ...] = ()  # CORS is off unless origins are given
    max_points: int = 5_000  # the most points a readings query may ask for
    max_skew_s: float = 86_400.0  # ingested readings further in the future are dead letters
    events_poll_s: float = 0.5  # how often the live stream looks for changes
    secure_cookie: bool = False  # set the UI's cookie Secure (behind TLS)
    key_cache_s: float = 1.0  # a valid key is remembered this long: a revocation takes effect within it
    read_cache_s: float = 1.0  # identical GETs share an answer this long (api/cache.py); 0: off

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1024 or self.rate_per_s <= 0 or self.burst < 1 or self.max_points < 2:
            raise ValueError("need max_body_bytes >= 1024, rate_per_s > 0, burst >= 1, max_points >= 2")
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be in 1..65535, got {self.port}")
