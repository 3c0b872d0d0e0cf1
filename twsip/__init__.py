"""twsip: many RFC 3261 SIP user agents on 127.0.0.1 in one Twisted reactor."""
