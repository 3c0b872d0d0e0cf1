"""The SIP stack, bottom up; each module imports only the ones before it, and nothing below
the UA core knows about sockets.

- `lexical` (ASCII wire numbers, loopback literals), `message` (bytes <-> Request/Response,
  the request header builder), `uri`, `sdp`: no I/O at all. What the stack needs of a
  reactor's time is `twsip.interfaces.TimeSource`.
- `transaction`: the RFC 3261 §17 state machines, their timers, and the typed seam to
  their transaction user.
- `ack_wait` (a 2xx resent until its ACK), `session` (dialog state, in-dialog requests),
  `uac` and `uas` (the two call sessions); `dialog` names them for the layers above.
- `wire` (local-mode UDP rules), `screening` (§8.2 checks), `registry` (calls and dialogs),
  `observers` (who watches the messages), `autoanswer`; `instance`: the UA core on one UDP
  port, the `SipInstance` DatagramProtocol and its application API.
"""
