# No __init__.py in twisted/ or twisted/plugins/: twistd finds this file through
# Twisted's plugin path, and an __init__.py would shadow Twisted's own package.
from twisted.application.service import ServiceMaker

socktopus = ServiceMaker(
    "Socktopus",
    "socktopus_tw.tap",
    "Live WebSocket connections and user accounts for serverless backends.",
    "socktopus",
)
