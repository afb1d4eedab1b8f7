import asyncio

import pytest

from app import event_loop


@pytest.fixture
def restore_policy():
    before = asyncio.get_event_loop_policy()
    yield
    asyncio.set_event_loop_policy(before)


def loop_made_by_policy() -> str:
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(_running())
    finally:
        loop.close()


async def _running() -> str:
    return event_loop.running()


def test_uvloop_makes_the_loops_created_after_it_uvloop(restore_policy):
    event_loop.install("uvloop")
    assert loop_made_by_policy() == "uvloop"


def test_asyncio_makes_them_asyncio_again(restore_policy):
    event_loop.install("uvloop")
    event_loop.install("asyncio")
    assert loop_made_by_policy() == "asyncio"


def test_an_unknown_loop_is_refused_with_its_name(restore_policy):
    with pytest.raises(ValueError, match="'trio'"):
        event_loop.install("trio")
