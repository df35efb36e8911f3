# The reuseport: server endpoint string (socktopus_tw/http/reuseport.py), found by
# serverFromString through Twisted's plugin path like Twisted's own tcp6: and
# systemd:. Importing this must not import the reactor: twistd reads plugins
# before it installs the one --reactor names.
from socktopus_tw.http.reuseport import ReusePortParser

reusePortEndpointParser = ReusePortParser()
