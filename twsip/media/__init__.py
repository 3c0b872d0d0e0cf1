"""RTP media for calls: one RTP endpoint per call, G.711, RFC 4733 DTMF, WAV play and record,
RFC 3550 statistics. It sits below the SIP dialogs, which will own one endpoint per call,
and imports nothing from the layers above it (only Twisted and the standard library).

Modules, one job each:
    rtp       bytes <-> RtpPacket (RFC 3550 §5.1); RtpError for anything malformed
    g711      PCMU/PCMA via audioop; CODECS registry; 8000 Hz, 160 samples per 20 ms
    wav       any PCM WAV -> 8 kHz mono 16-bit (load_wav, probe_wav); WavWriter; WavError
    dtmf      RFC 4733 sender packets (event_packets, dtmf_ticks) and DtmfDetector
    stats     ReceiveStats per SSRC (loss, jitter); StreamStats snapshots
    pacing    PacingScheduler: one DelayedCall per ptime for every playing stream
    sources   tone/silence generators; tone, silence and echo frame sources
    net       is_loopback, listen_rtp (+2 steps on CannotListenError)
    endpoint  RtpEndpoint (DatagramProtocol): play, send_dtmf, receive, close

Nothing is imported here, so `import twsip.media.rtp` costs only that module.
"""
