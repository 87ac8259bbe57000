"""Secrets never reach a message: DSN parameters beyond the password."""

from __future__ import annotations

import pytest

from smart_maintenance.connectors.postgres.server import redact


@pytest.mark.parametrize("dsn", [
    "postgresql://app:pw-s3cret@db:5432/plant?sslmode=verify-full&sslpassword=key-s3cret",
    "postgresql://app@db/plant?sslpassword=key-s3cret",
    "host=db dbname=plant sslcert=/c.pem sslkey=/k.pem sslpassword=key-s3cret",
])
def test_redact_removes_every_secret_parameter(dsn: str) -> None:
    shown = redact(dsn)
    assert "s3cret" not in shown
    assert "db" in shown and "plant" in shown  # still says where it goes
