"""The dialog layer's public face: call sessions, their failure type and what they need.

`session` holds the dialog state both ends share, `uac` the calls this user agent places,
`uas` the ones it receives; the UA core and the layers above import them from here.
"""

from __future__ import annotations

from twsip.sip.session import ALLOWED_METHODS, CallFailed, DialogState, Session, UserAgent
from twsip.sip.uac import ClientSession
from twsip.sip.uas import ServerSession

__all__ = ["ALLOWED_METHODS", "CallFailed", "ClientSession", "DialogState", "ServerSession",
           "Session", "UserAgent"]
