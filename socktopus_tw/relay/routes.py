# -*- test-case-name: tests.relay.test_api,tests.relay.test_presence,tests.test_tap -*-
"""
The relay's endpoints, composed around one registry: what the daemon serves
for SPEC §3 and §7.1, by first path segment.
"""

from __future__ import annotations

from typing import Any

from twisted.web.resource import IResource

from socktopus_tw.apps import Apps
from socktopus_tw.metrics import Metrics
from socktopus_tw.relay.admission import Gatekeeper
from socktopus_tw.relay.api import KickResource, PresenceResource, SendResource
from socktopus_tw.relay.home import HomeResource
from socktopus_tw.relay.registry import IRegistry
from socktopus_tw.relay.totals import SendTotals
from socktopus_tw.relay.upgrade import ReceiveResource
from socktopus_tw.relay.websocket import RelayFactory


def routes(
    apps: Apps,
    registry: IRegistry,
    reactor: Any,
    *,
    tokenLifespan: float,
    maxClientBuffer: int,
    maxMessageSize: int,
    clientMessageRate: float = 20.0,
    metrics: Metrics | None = None,
    totals: SendTotals | None = None,
    accountsMounted: bool = False,
    healthMounted: bool = False,
    metricsListener: bool = False,
) -> list[tuple[bytes, IResource]]:
    """
    The home page, the WebSocket endpoint (spelled as the original did and
    as it should be), C{/send}, C{/kick} and C{/presence}.

    @param accountsMounted: the home page's list of endpoints names the
        accounts paths; C{healthMounted}, C{/health} and C{/ready};
        C{metricsListener}, C{/metrics} on its own listener.
    """
    factory = RelayFactory(
        registry,
        maxClientBuffer=maxClientBuffer,
        maxMessageSize=maxMessageSize,
        clientMessageRate=clientMessageRate,
        clock=reactor,
    )
    gatekeeper = Gatekeeper(apps, registry, reactor, tokenLifespan)
    receive = ReceiveResource(gatekeeper, factory)
    return [
        (
            b"",
            HomeResource(
                apps,
                registry,
                clock=reactor,
                accounts=accountsMounted,
                health=healthMounted,
                metricsListener=metricsListener,
            ),
        ),
        (b"recieve", receive),
        (b"receive", receive),
        (
            b"send",
            SendResource(
                apps,
                registry,
                reactor,
                maxMessageSize=maxMessageSize,
                metrics=metrics,
                totals=totals,
            ),
        ),
        (b"kick", KickResource(apps, registry, reactor)),
        (b"presence", PresenceResource(apps, registry, reactor)),
    ]
