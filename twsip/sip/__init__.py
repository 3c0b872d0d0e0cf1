"""The SIP stack, bottom up: `message` (bytes <-> Request/Response), `uri`, `sdp` (no I/O at
all); `transaction` (RFC 3261 §17 state machines and their timers); `dialog` (dialogs and
call sessions); `instance` (the UA core on one UDP port). Each module imports only the ones
before it, and nothing below the UA core knows about sockets.
"""
