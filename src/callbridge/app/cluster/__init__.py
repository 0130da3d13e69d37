"""Several callbridge workers behind one SIP proxy, sharing live state in Redis.

Kept import-light: ``app/config.py`` imports :mod:`.config` from here.
"""
