"""The outbox protocol now lives with the other queries in ``store/outbox.py``; its names stay importable here."""

from ..store.outbox import (  # noqa: F401
    CHANNEL,
    CONSUMER,
    Batch,
    StaleBatch,
    claim,
    claim_split,
    has_pending,
    prune,
    record_error,
    rerequest,
    stale_batches,
    status,
    wait_for,
)
