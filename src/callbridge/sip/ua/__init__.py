"""The parts of the UA core; :mod:`callbridge.sip.useragent` assembles them into :class:`UserAgent`.

Each module has one job and shares state through :class:`~callbridge.sip.ua.state.UaState`:
``admission`` turns input away before parsing, ``uas`` handles inbound requests, ``uac``
outbound calls and responses, ``actions`` in-dialog requests and hang-ups, ``timers``
session timers and reliable provisionals (on ``deadlines``, a heap), ``auth`` inbound
digest, and ``registrations`` the REGISTER clients.
"""
