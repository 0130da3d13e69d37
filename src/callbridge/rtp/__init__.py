"""rtp layer."""
