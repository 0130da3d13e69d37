"""The web console: static pages served by the API's own HTTP server, and the read models they show.

No build step: the pages are plain HTML, CSS and ES modules in ``static/``, shipped as package data.
"""
