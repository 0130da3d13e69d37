"""callbridge: SIP phone calls bridged to conversational voice AI."""

__version__ = "0.1.0"
