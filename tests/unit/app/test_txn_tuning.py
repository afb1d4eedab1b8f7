from types import SimpleNamespace

import aiokafka.producer.sender as sender
import pytest
from aiokafka.errors import ConcurrentTransactions, CoordinatorLoadInProgressError, NoError

from app.txn_tuning import set_concurrent_transactions_backoff


@pytest.fixture
def backoff_5ms():
    before = sender.BACKOFF_OVERRIDE
    set_concurrent_transactions_backoff(5)
    yield
    sender.BACKOFF_OVERRIDE = before


def add_offsets_handler(retry_backoff_s=0.1):
    txn_manager = SimpleNamespace(transactional_id="weir-p-3", added=[])
    txn_manager.consumer_group_added = txn_manager.added.append
    fake_sender = SimpleNamespace(_retry_backoff=retry_backoff_s, _txn_manager=txn_manager)
    return sender.AddOffsetsToTxnHandler(fake_sender, "weir"), txn_manager


def response(error):
    return SimpleNamespace(error_code=error.errno)


def test_adding_offsets_while_the_previous_commit_completes_retries_after_the_short_backoff(
        backoff_5ms):
    handler, _ = add_offsets_handler()
    assert handler.handle_response(response(ConcurrentTransactions)) == 0.005


def test_other_retriable_errors_keep_aiokafkas_backoff(backoff_5ms):
    handler, _ = add_offsets_handler(retry_backoff_s=0.1)
    assert handler.handle_response(response(CoordinatorLoadInProgressError)) == 0.1


def test_success_still_adds_the_group(backoff_5ms):
    handler, txn_manager = add_offsets_handler()
    assert handler.handle_response(response(NoError)) is None
    assert txn_manager.added == ["weir"]


def test_adding_partitions_uses_the_same_backoff(backoff_5ms):
    assert sender.BACKOFF_OVERRIDE == 0.005
