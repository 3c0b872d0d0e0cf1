"""RTP media for calls (RTP endpoints, G.711, RFC 4733 DTMF, WAV play and record, RFC 3550
statistics). Empty for now: it sits below the SIP dialogs, which will own one RTP endpoint
per call, and imports nothing from the layers above it.
"""
