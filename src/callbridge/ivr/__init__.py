"""ivr layer."""
