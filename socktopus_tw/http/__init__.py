"""
The HTTP edge, below every endpoint.

  - L{respond <socktopus_tw.http.respond>}: the one way an endpoint answers:
    JSON bodies, error mapping, the resource base classes;
  - L{site <socktopus_tw.http.site>}: the twisted.web site, channel and request
    (body limit, busy/idle bookkeeping, the shutdown drain, the hand-over of
    a connection to another protocol);
  - L{fastpath <socktopus_tw.http.fastpath>}: plain backend C{POST}s served
    without twisted.web, everything else handed to it;
  - L{proxy <socktopus_tw.http.proxy>}: who the client is behind a local proxy;
  - L{writing <socktopus_tw.http.writing>}: writing to a TCP socket at once;
  - L{reuseport <socktopus_tw.http.reuseport>}: the C{reuseport:} endpoint,
    for several daemons on one port.
"""
