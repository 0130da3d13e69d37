"""Flow files the console tests configure: one that validates, and a draft that does not (line 7)."""

SALES_FLOW = """\
flow: sales
start: menu
nodes:
  menu:
    type: menu
    prompt: "Press 1 for sales."
    options:
      1: {label: Sales, next: agent}
    default: bye
  agent: {type: agent, agent: assistant, reason: sales}
  bye: {type: hangup}
"""
BROKEN_FLOW = """\
flow: broken
start: hello
nodes:
  hello:
    type: say
    text: "Hi"
    next: nowhere
"""
