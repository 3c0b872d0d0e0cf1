"""The command lines: ``python -m twsip`` (`twsip.__main__`) and the options that
``twistd sipinstances`` shares with it (answer modes, media, pcap, counters)."""
