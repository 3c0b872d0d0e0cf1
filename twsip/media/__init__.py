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
    session   Direction, PayloadTypes, EndpointCounters, EndpointReport: shared by the three below
    sending   SendJobs: files, digit strings and a source, one packet per pacing tick
    receiving RtpReceiver: screening, per-SSRC statistics, DTMF detection, recording, echo feed
    endpoint  RtpEndpoint (DatagramProtocol): socket, addresses, RTP header; owns the two above

Nothing is imported here, so `import twsip.media.rtp` costs only that module.
"""
