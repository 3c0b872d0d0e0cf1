"""twistd plugin: ``twistd -n sipinstances`` runs SIP instances on 127.0.0.1.

Only a name here: the options and the service live in twsip.service, imported when twistd
needs them, so that loading this file never imports the reactor (``twistd -r asyncio``).
"""

from twisted.application.service import ServiceMaker

sipinstances = ServiceMaker(
    "twsip SIP instances",
    "twsip.service",
    "SIP user agents on 127.0.0.1 that answer calls (local mode only).",
    "sipinstances",
)
