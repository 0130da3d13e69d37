"""FlowRunner on small flows: branches, hours, gather, variables, loop guard."""

from __future__ import annotations

import textwrap
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from callbridge.ivr import FlowRunner, load_flow_text
from callbridge.ivr.conditions import HoursTest, parse_clock, parse_days

from .test_flow_fakeio import FakeIO, run_with

FLOWS = Path(__file__).parent / "flows"


def flow_of(nodes: str, *, head: str = ""):
    text = ("flow: t\nstart: start\n" + textwrap.dedent(head)
            + "nodes:\n" + textwrap.indent(textwrap.dedent(nodes), "  "))
    return load_flow_text(text, "t.yaml", agents={"assistant"}, trunks={"twilio"},
                          settings={"operator_uri": "sip:op@example.com"}, base_dir=FLOWS)


async def run(flow, io=None, **kwargs):
    io = io or FakeIO()
    runner = FlowRunner(flow, io, **kwargs)
    outcome = await run_with(runner, io)
    return runner, io, outcome


HOURS_FLOW = """
start:
  type: branch
  when:
    - if: {hours: {timezone: Europe/Paris, days: mon-fri, open: "09:00", close: "17:30"}}
      next: open
  else: closed
open: {type: say, text: We are open, next: end}
closed: {type: say, text: We are closed, next: end}
end: {type: hangup}
"""


@pytest.mark.parametrize(("utc", "expected"), [
    (datetime(2024, 6, 3, 7, 0, tzinfo=timezone.utc), "We are open"),     # Monday 09:00 in Paris (UTC+2)
    (datetime(2024, 6, 3, 6, 59, tzinfo=timezone.utc), "We are closed"),  # 08:59
    (datetime(2024, 6, 3, 15, 29, tzinfo=timezone.utc), "We are open"),   # 17:29
    (datetime(2024, 6, 3, 15, 30, tzinfo=timezone.utc), "We are closed"),  # 17:30: closing time
    (datetime(2024, 6, 8, 10, 0, tzinfo=timezone.utc), "We are closed"),  # Saturday
    (datetime(2024, 1, 8, 16, 0, tzinfo=timezone.utc), "We are open"),    # winter: 17:00 in Paris (UTC+1)
])
async def test_business_hours_branch_with_a_fixed_clock(utc, expected):
    _, io, outcome = await run(flow_of(HOURS_FLOW), clock=lambda: utc)
    assert io.said == [expected]
    assert outcome == "hangup"
    assert io.recorded("branch")[0]["next"] == ("open" if expected == "We are open" else "closed")


def test_overnight_hours_count_from_the_opening_day():
    paris = ZoneInfo("Europe/Paris")
    night = HoursTest("Europe/Paris", parse_days("fri"), parse_clock("22:00"), parse_clock("06:00"))
    assert night.holds({}, datetime(2024, 6, 7, 23, 0, tzinfo=paris))       # Friday night
    assert night.holds({}, datetime(2024, 6, 8, 5, 59, tzinfo=paris))       # early Saturday
    assert not night.holds({}, datetime(2024, 6, 8, 6, 0, tzinfo=paris))
    assert not night.holds({}, datetime(2024, 6, 6, 23, 0, tzinfo=paris))   # Thursday night


def test_day_ranges():
    assert parse_days("mon-fri") == frozenset(range(5))
    assert parse_days("fri-mon") == frozenset({4, 5, 6, 0})
    assert parse_days(["sat", "sun"]) == frozenset({5, 6})
    assert parse_days("daily") == frozenset(range(7))


async def test_variable_and_caller_conditions():
    flow = flow_of("""
    start:
      type: branch
      when:
        - if: {caller: {prefix: "+33"}}
          next: french
        - if: [{var: vip, equals: "yes"}, {var: sip.x-tier, in: [gold, platinum]}]
          next: vip
        - if: {var: sip.x-reason, exists: true}
          next: reason
        - if: {caller: {in: ["+15550000001", "+15550000002"]}}
          next: known
      else: other
    french: {type: hangup, reason: french}
    vip: {type: hangup, reason: vip}
    reason: {type: hangup, reason: reason}
    known: {type: hangup, reason: known}
    other: {type: hangup, reason: other}
    """, head="vars: {vip: \"yes\"}\n")
    cases = [
        (FakeIO(caller="+33612345678"), "french"),
        (FakeIO(headers={"X-Tier": "GOLD"}), "vip"),
        (FakeIO(headers={"X-Reason": "billing"}), "reason"),
        (FakeIO(headers={"X-Reason": ""}), "other"),
        (FakeIO(caller="+15550000002"), "known"),
        (FakeIO(caller=None), "other"),
    ]
    for io, reason in cases:
        await run(flow, io)
        assert io.calls[-1] == ("hangup", reason), io.info


async def test_set_and_templates_and_say_languages():
    flow = flow_of("""
    start:
      type: set
      vars: {who: "{{ caller.name }}", greeting: "Hello {{ who }}"}
      next: hello
    hello:
      type: say
      text: {en: "{{ greeting }} from {{ called }}", es: "Hola {{ who }}"}
      voice: narrator
      next: fixed
    fixed: {type: say, text: {en: Fixed, es: Fijo}, language: en, next: end}
    end: {type: hangup}
    """, head="languages: [en, es]\nvoices: {en: amy, es: lupe}\n")
    runner, io, _ = await run(flow, FakeIO(caller_name="Ada", headers={"X-Lang": "es"}))
    says = [call[1:4] for call in io.calls if call[0] == "say"]
    assert says == [("Hola Ada", "es", "narrator"), ("Fixed", "en", "amy")]
    assert runner.variables["greeting"] == "Hello Ada"
    assert io.recorded("set")[0]["values"] == {"who": "Ada", "greeting": "Hello Ada"}


async def test_missing_language_text_falls_back_to_the_default_language():
    flow = flow_of("start: {type: say, text: {en: Hi, es: Hola}, next: end}\nend: {type: hangup}\n",
                   head="languages: [en, es, fr]\n")
    _, io, _ = await run(flow, FakeIO(headers={"X-Lang": "fr"}))
    assert [call[1:3] for call in io.calls if call[0] == "say"] == [("Hi", "en")]


async def test_play_node_plays_the_file():
    flow = flow_of("start: {type: play, file: chime.wav, next: end}\nend: {type: hangup}\n")
    _, io, _ = await run(flow)
    assert io.calls[0][:2] == ("play", (FLOWS / "chime.wav").resolve())


async def test_node_visit_cap_stops_a_loop():
    flow = flow_of("start: {type: goto, next: again}\nagain: {type: goto, next: start}\n")
    runner, io, outcome = await run(flow, max_visits=50)
    assert outcome == "loop_limit"
    assert runner.visits == 51
    assert io.calls == [("hangup", "flow_loop")]
    assert io.recorded("error")[0]["reason"] == "node visit limit reached"


async def test_default_visit_cap_is_a_thousand():
    flow = flow_of("start: {type: goto, next: start}\n")
    runner, _, outcome = await run(flow)
    assert (outcome, runner.visits) == ("loop_limit", 1001)


async def test_end_of_flow_hangs_up():
    flow = flow_of("start: {type: agent, agent: assistant, reason: sales, context: {tier: \"{{ t }}\"}}\n",
                   head="vars: {t: gold}\n")
    _, io, outcome = await run(flow)
    [(_, context)] = io.handoffs
    assert context.context == {"tier": "gold"} and context.variables == {"t": "gold"}
    assert outcome == "handoff" and io.calls[-1] == ("hangup", "agent_finished")


async def test_transfer_target_template_and_failure_path():
    flow = flow_of("""
    start: {type: transfer, target: "{{ operator_uri }}", on_failure: sorry}
    sorry: {type: say, text: Sorry, next: end}
    end: {type: hangup, reason: no_operator}
    """)
    _, io, outcome = await run(flow, FakeIO(transfer_accepted=False))
    assert io.calls[0] == ("transfer", "sip:op@example.com", "refer", None)
    assert io.recorded("transfer_result")[0]["accepted"] is False
    assert (outcome, io.calls[-1]) == ("hangup", ("hangup", "no_operator"))


GATHER = """
start:
  type: gather
  input: {input}
  prompt: Your account number or yes or no
  into: answer
  num_digits: 4
  {extra}
  next: done
  on_timeout: silent
  on_no_match: unclear
done: {{type: say, text: "Got {{{{ answer }}}}", next: end}}
silent: {{type: say, text: Nothing, next: end}}
unclear: {{type: say, text: Unclear, next: end}}
end: {{type: hangup}}
"""


def gather_flow(input_kind: str, extra: str = ""):
    return flow_of(GATHER.format(input=input_kind, extra=extra))


async def test_gather_digits_stop_at_num_digits():
    _, io, _ = await run(gather_flow("dtmf"), FakeIO(keys=[(3, "1"), (4, "2"), (5, "3"), (6, "4"), (6.5, "5")]))
    assert io.said[-1] == "Got 1234"


async def test_gather_digits_end_with_the_finish_key_or_a_pause():
    _, io, _ = await run(gather_flow("dtmf"), FakeIO(keys=[(3, "4"), (4, "2"), (5, "#")]))
    assert io.said[-1] == "Got 42"
    _, io, _ = await run(gather_flow("dtmf"), FakeIO(keys=[(3, "7"), (10, "8")]))  # 7 s > inter-digit 3 s
    assert io.said[-1] == "Got 7"


async def test_gather_timeout_goes_to_on_timeout():
    runner, io, _ = await run(gather_flow("dtmf"))
    assert io.said[-1] == "Nothing" and runner.variables["answer"] == ""


async def test_gather_speech_with_choices():
    flow = gather_flow("speech",
                       "choices: {\"yes\": confirmed, \"yes please\": keen, \"no\": declined}\n  hints: [account]")
    _, io, _ = await run(flow, FakeIO(speech=[(4, "Yes, please!")]))
    assert io.said[-1] == "Got keen"
    listen = next(call for call in io.calls if call[0] == "listen")
    assert listen[2] == ["account", "yes", "yes please", "no"]
    _, io, _ = await run(flow, FakeIO(speech=[(4, "maybe later")]))
    assert io.said[-1] == "Unclear"


async def test_gather_both_takes_speech_when_it_comes_first():
    _, io, _ = await run(gather_flow("both"), FakeIO(speech=[(3, "it is 9876")], keys=[(6, "1")]))
    assert io.said[-1] == "Got it is 9876"


async def test_gather_both_takes_digits_when_they_come_first():
    _, io, _ = await run(gather_flow("both"), FakeIO(speech=[(9, "hello")], keys=[(3, "5"), (4, "5"), (5, "#")]))
    assert io.said[-1] == "Got 55"


async def test_gather_retries_before_giving_up():
    flow = gather_flow("dtmf", "retries: 2")
    _, io, _ = await run(flow, FakeIO(keys=[(9, "3"), (9.5, "#")]))  # first try times out at 7 s
    assert io.said.count("Your account number or yes or no") == 2
    assert io.said[-1] == "Got 3"


async def test_key_typed_ahead_skips_the_gather_prompt():
    flow = flow_of("""
    start: {type: say, text: Welcome, next: ask}
    ask: {type: gather, prompt: Enter digits, into: pin, num_digits: 2, next: done}
    done: {type: say, text: "PIN {{ pin }}", next: end}
    end: {type: hangup}
    """)
    _, io, _ = await run(flow, FakeIO(keys=[(1, "4"), (1.5, "2")]))
    assert io.said == ["Welcome", "PIN 42"]
