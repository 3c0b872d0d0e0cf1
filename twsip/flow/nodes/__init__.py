"""One small handler per node type, one module per family of nodes.

`base` says what a handler is; `call_control` (MakeCall, Answer, Release) and
`call_events` (INCOMING, RINGING, DISCONNECTED, TIMEOUT) are the families the engine runs
today. The table of them is `twsip.flow.registry`, which imports these modules; they never
import it.
"""
