"""Browser calls: a WebRTC leg (aiortc) that goes through the same routing, IVR, agent and records as SIP."""
