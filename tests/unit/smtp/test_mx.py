"""Choosing where mail for a domain goes: MX order, implicit MX, null MX, loops, DNS failures."""

import random

import pytest
from twisted.internet import defer
from twisted.python.failure import Failure

from mailsuite.smtp.mx import (
    Destination,
    DestinationError,
    host_destinations,
    mx_destinations,
)
from mailsuite.testing.resolver import FakeResolver


def result_of(d: defer.Deferred):
    box = []
    d.addBoth(box.append)
    assert box, "the lookup did not finish synchronously"
    if isinstance(box[0], Failure):
        box[0].raiseException()
    return box[0]


@pytest.fixture
def resolver():
    return FakeResolver()


def test_mx_hosts_come_in_preference_order(resolver):
    resolver.mx("example.org", (20, "backup.example.org"), (10, "mx.example.org"))
    resolver.a("mx.example.org", "192.0.2.1")
    resolver.a("backup.example.org", "192.0.2.2")
    found = result_of(mx_destinations(resolver, "example.org", port=25))
    assert found == [Destination("mx.example.org", ("192.0.2.1",), 25),
                     Destination("backup.example.org", ("192.0.2.2",), 25)]


def test_equal_preferences_are_shuffled_but_stay_ahead_of_worse_ones(resolver):
    resolver.mx("example.org", (10, "a.example.org"), (10, "b.example.org"),
                (30, "c.example.org"))
    for host, address in (("a", "192.0.2.1"), ("b", "192.0.2.2"), ("c", "192.0.2.3")):
        resolver.a(f"{host}.example.org", address)
    orders = set()
    for seed in range(20):
        found = result_of(mx_destinations(resolver, "example.org", port=25,
                                          rng=random.Random(seed)))
        assert found[-1].hostname == "c.example.org"
        orders.add(tuple(d.hostname for d in found[:2]))
    assert orders == {("a.example.org", "b.example.org"), ("b.example.org", "a.example.org")}


def test_ipv4_and_ipv6_addresses_are_both_tried_ipv4_first(resolver):
    resolver.mx("example.org", (10, "mx.example.org"))
    resolver.aaaa("mx.example.org", "2001:db8::1")
    resolver.a("mx.example.org", "192.0.2.1")
    [found] = result_of(mx_destinations(resolver, "example.org", port=25))
    assert found.addresses == ("192.0.2.1", "2001:db8::1")


def test_a_domain_without_mx_is_its_own_implicit_mx(resolver):
    resolver.a("example.org", "192.0.2.7")
    assert result_of(mx_destinations(resolver, "example.org", port=1025)) == [
        Destination("example.org", ("192.0.2.7",), 1025)]


def test_null_mx_fails_permanently_at_once(resolver):
    resolver.mx("example.org", (0, ""))
    with pytest.raises(DestinationError) as raised:
        result_of(mx_destinations(resolver, "example.org", port=25))
    assert raised.value.permanent and raised.value.status == "5.1.10"


def test_a_domain_that_does_not_exist_fails_permanently(resolver):
    with pytest.raises(DestinationError) as raised:
        result_of(mx_destinations(resolver, "nowhere.example", port=25))
    assert raised.value.permanent and raised.value.status == "5.1.2"


def test_a_dns_server_failure_is_temporary(resolver):
    resolver.fail("example.org")
    with pytest.raises(DestinationError) as raised:
        result_of(mx_destinations(resolver, "example.org", port=25))
    assert not raised.value.permanent and raised.value.status.startswith("4.")


def test_mx_hosts_without_addresses_are_a_temporary_failure(resolver):
    resolver.mx("example.org", (10, "mx.example.org"))
    with pytest.raises(DestinationError) as raised:
        result_of(mx_destinations(resolver, "example.org", port=25))
    assert not raised.value.permanent


def test_own_name_in_the_mx_list_drops_it_and_every_worse_host(resolver):
    resolver.mx("example.org", (10, "mx.example.org"), (20, "me.example.net"),
                (30, "late.example.org"))
    resolver.a("mx.example.org", "192.0.2.1")
    resolver.a("late.example.org", "192.0.2.3")
    found = result_of(mx_destinations(resolver, "example.org", port=25,
                                      own_names={"me.example.net"}))
    assert [d.hostname for d in found] == ["mx.example.org"]


def test_being_the_best_mx_is_a_loop(resolver):
    resolver.mx("example.org", (10, "me.example.net"))
    with pytest.raises(DestinationError) as raised:
        result_of(mx_destinations(resolver, "example.org", port=25,
                                  own_names={"me.example.net"}))
    assert raised.value.status == "5.4.6"


def test_a_route_to_an_ip_literal_needs_no_lookup(resolver):
    assert result_of(host_destinations(resolver, "127.0.0.1", 2526)) == [
        Destination("127.0.0.1", ("127.0.0.1",), 2526)]
    assert resolver.queries == []
