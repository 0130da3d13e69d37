import random

import pytest

from callbridge.rtp.ports import PortAllocator, PortsExhaustedError


def test_default_range_capacity():
    alloc = PortAllocator()
    assert alloc.capacity == 5000  # 10000, 10002, ..., 19998 (RTCP 19999)
    assert alloc.in_use == 0


def test_allocates_even_ports_with_rtcp_inside_range():
    alloc = PortAllocator(10001, 10010)  # odd start rounds up; 10010 has no +1
    ports = [alloc.allocate() for _ in range(alloc.capacity)]
    assert sorted(ports) == [10002, 10004, 10006, 10008]
    assert all(p % 2 == 0 and p + 1 <= 10010 for p in ports)


def test_exhaustion_and_release():
    alloc = PortAllocator(20000, 20005)
    a, b = alloc.allocate(), alloc.allocate()
    assert a != b and {a, b} <= {20000, 20002, 20004}
    c = alloc.allocate()
    assert alloc.in_use == 3 and alloc.available == 0
    with pytest.raises(PortsExhaustedError):
        alloc.allocate()
    alloc.release(b)
    assert alloc.in_use == 2
    assert alloc.allocate() == b
    assert len({a, b, c}) == 3


def test_never_hands_out_a_pair_twice_while_in_use():
    alloc = PortAllocator(10000, 10100, rng=random.Random(1))
    rnd = random.Random(2)
    held: set[int] = set()
    for _ in range(2000):
        if held and (rnd.random() < 0.5 or alloc.available == 0):
            port = rnd.choice(sorted(held))
            held.remove(port)
            alloc.release(port)
        else:
            port = alloc.allocate()
            assert port not in held
            held.add(port)
        assert alloc.in_use == len(held)


def test_released_ports_are_reused_last():
    alloc = PortAllocator(10000, 10007)  # four pairs: one cools down
    first = alloc.allocate()
    alloc.release(first)
    got = [alloc.allocate() for _ in range(4)]
    assert sorted(got[:3]) == sorted({10000, 10002, 10004, 10006} - {first}) and got[3] == first


def test_a_freed_pair_cools_down_behind_a_quarter_of_the_range():
    alloc = PortAllocator(10000, 10799, rng=random.Random(3))  # 400 pairs, 100 cool down
    for _ in range(50):
        freed = alloc.allocate()
        alloc.release(freed)
        soon = [alloc.allocate() for _ in range(299)]  # all but the 100 cooling ones
        assert freed not in soon
        for port in soon:
            alloc.release(port)
    assert alloc.in_use == 0 and alloc.available == 400


def test_ports_are_drawn_at_random_not_in_order():
    alloc = PortAllocator()  # the OS's CSPRNG, as in the server
    ports = [alloc.allocate() for _ in range(20)]
    steps = {b - a for a, b in zip(ports, ports[1:], strict=False)}
    assert steps != {2}, ports  # the old allocator handed out 10000, 10002, 10004, ...
    assert len(set(ports)) == 20
    # Spread over the range: 20 draws from 5000 pairs all within 1000 of each other is a 1e-13 event.
    assert max(ports) - min(ports) > 1000, ports


def test_allocate_and_release_stay_constant_time():
    alloc = PortAllocator(1024, 65535, rng=random.Random(5))  # 32,256 pairs
    held = [alloc.allocate() for _ in range(alloc.capacity)]
    assert alloc.available == 0 and len(set(held)) == alloc.capacity
    for port in held:
        alloc.release(port)
    assert alloc.available == alloc.capacity


def test_release_errors():
    alloc = PortAllocator(10000, 10010)
    with pytest.raises(ValueError):
        alloc.release(10000)  # never allocated
    p = alloc.allocate()
    alloc.release(p)
    with pytest.raises(ValueError):
        alloc.release(p)  # double release


def test_mark_bad_and_reset():
    alloc = PortAllocator(10000, 10003)  # two pairs
    p = alloc.allocate()
    alloc.mark_bad(p)
    assert alloc.in_use == 0 and alloc.available == 1
    q = alloc.allocate()
    assert q != p
    with pytest.raises(PortsExhaustedError):
        alloc.allocate()
    assert alloc.reset_bad() == 1
    assert alloc.allocate() == p
    alloc.release(q)
    alloc.release(p)
    assert alloc.available == 2 and alloc.capacity == 2


def test_shuffled_order_is_deterministic_with_seed():
    a = PortAllocator(10000, 11000, rng=random.Random(7))
    b = PortAllocator(10000, 11000, rng=random.Random(7))
    assert [a.allocate() for _ in range(10)] == [b.allocate() for _ in range(10)]


@pytest.mark.parametrize(
    "lo,hi", [(10000, 10000), (10001, 10002), (20000, 10000), (0, 10), (65535, 65535), (10000, 70000)]
)
def test_bad_ranges(lo, hi):
    with pytest.raises(ValueError):
        PortAllocator(lo, hi)


def test_top_of_port_space():
    alloc = PortAllocator(65534, 65535)
    assert alloc.allocate() == 65534
