"""How soon a transactional producer asks again to open its next transaction.

A transaction's commit returns once the broker has decided it; the commit
markers are written to the partitions just after. The next transaction's first
``AddPartitionsToTxn`` therefore usually gets ``CONCURRENT_TRANSACTIONS``, and
aiokafka waits a fixed 20 ms before asking again, while the markers take about
1 ms on a local broker. Every Weir batch is one transaction, so that wait was
the largest part of a batch's cost: a batch of 8 partitions handled in turn
spent 8 x 25 ms waiting (measured: first send of a transaction acknowledged after
25 ms at the p50, 1.8 ms with a 5 ms wait). ``WEIR_TXN_RETRY_BACKOFF_MS`` sets
that wait; aiokafka's other retry backoffs are left alone.
"""

from __future__ import annotations

import aiokafka.producer.sender as _sender


def set_concurrent_transactions_backoff(backoff_ms: int) -> None:
    """Wait ``backoff_ms`` before retrying to add partitions to a transaction that the
    broker still reports as concurrent with the previous one (all producers of the process)."""
    if not hasattr(_sender, "BACKOFF_OVERRIDE"):
        raise RuntimeError("aiokafka.producer.sender.BACKOFF_OVERRIDE is gone: "
                           "WEIR_TXN_RETRY_BACKOFF_MS cannot be applied to this aiokafka")
    _sender.BACKOFF_OVERRIDE = backoff_ms / 1000
