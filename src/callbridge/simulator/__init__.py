"""The call simulator behind ``callbridge test-call``: a SIP client that dials a line and runs a script.

It is built from the project's own SIP, RTP and call layers, but it is a
client tool, not part of the service: ``runner.py`` places the call and runs
the steps, ``script.py`` loads and checks the YAML script, ``heard.py`` keeps
what the far end said, ``report.py`` shapes the result, ``cli.py`` is the command.
"""
