"""How soon a transactional producer asks again to open its next transaction.

A transaction's commit returns once the broker has decided it; the commit
markers are written to the partitions just after. The next transaction's first
request therefore often gets ``CONCURRENT_TRANSACTIONS``, while the markers take
about 1 ms on a local broker:

- ``AddPartitionsToTxn`` (its first send): aiokafka waits a fixed 20 ms before
  asking again. When every batch was a transaction, that wait was the largest part
  of a batch's cost (first send of a transaction acknowledged after 25 ms at the
  p50, 1.8 ms with a 5 ms wait).
- ``AddOffsetsToTxn`` (a transaction that carries only consumed offsets, opened
  just after the previous commit): aiokafka waits its general retry backoff, 100 ms,
  holding the source partition's transaction, so that partition's next batch (and
  the round of batches it belongs to, `app.direct_batches`) waited too. Seen twice in
  20 s of the fraud latency benchmark (5,000 transactions/s): two commits of 105 ms,
  each a latency spike of over 100 ms.

``WEIR_TXN_RETRY_BACKOFF_MS`` sets both waits; aiokafka's other retry backoffs are
left alone.
"""

from __future__ import annotations

import aiokafka.producer.sender as _sender
from aiokafka.errors import ConcurrentTransactions, for_code

_add_offsets_response = getattr(getattr(_sender, "AddOffsetsToTxnHandler", None),
                                "handle_response", None)


def _add_offsets_handle_response(handler, response):
    """aiokafka's own handling, with the short backoff when the previous commit is still
    being completed."""
    backoff = _add_offsets_response(handler, response)
    if backoff is not None and for_code(response.error_code) is ConcurrentTransactions:
        return _sender.BACKOFF_OVERRIDE
    return backoff


def set_concurrent_transactions_backoff(backoff_ms: int) -> None:
    """Wait ``backoff_ms`` before asking again to add partitions or offsets to a transaction
    that the broker still reports as concurrent with the previous one (all producers of the
    process)."""
    if not hasattr(_sender, "BACKOFF_OVERRIDE") or _add_offsets_response is None:
        raise RuntimeError("aiokafka.producer.sender changed (BACKOFF_OVERRIDE or "
                           "AddOffsetsToTxnHandler is gone): WEIR_TXN_RETRY_BACKOFF_MS cannot "
                           "be applied to this aiokafka")
    _sender.BACKOFF_OVERRIDE = backoff_ms / 1000
    _sender.AddOffsetsToTxnHandler.handle_response = _add_offsets_handle_response
