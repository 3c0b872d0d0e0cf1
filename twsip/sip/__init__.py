"""The SIP stack, bottom up; nothing below the UA core knows about sockets.

- Wire format, no I/O: `message` (bytes <-> Request/Response, the request header builder),
  `uri`, `sdp_model` (RFC 4566), `offer_answer` (RFC 3264), with `sdp` naming them for the
  dialogs; `digest` (RFC 7616 credentials). What the stack needs of a reactor's time is
  `twsip.interfaces.TimeSource`; ASCII numbers and loopback literals are `twsip.lexical`.
- `transaction`: the RFC 3261 §17 state machines, their timers, and the typed seam to
  their transaction user; `deadlines`: many timers of one kind behind one DelayedCall.
- Dialogs and calls: `session` (dialog state, in-dialog requests), `uac` and `uas` (the two
  call sessions), `dialog` (their names for the layers above), `ack_wait` (a 2xx resent
  until its ACK), `call_media` (the call's RTP endpoint and digits), `reinvite` and
  `midcall_state` (re-INVITEs we send: hold, retrieve, glare), `transfer` and `replaces`
  (REFER/NOTIFY, RFC 3891), `session_timer` (RFC 4028).
- The UA core: `wire` (local-mode UDP rules), `screening` (§8.2 checks), `cancel`,
  `registry` (calls and dialogs), `observers` (who watches the messages), `noise` (log
  lines summarised per kind), `limits` (call cap, idle limit), `autoanswer` (answer modes),
  `registration` (REGISTER to a PBX), `shutdown`; `instance`: the `SipInstance`
  DatagramProtocol on one UDP port and its application API.
"""
