"""yamlsource: whatever the text, a located SourceError or values, never another exception.

The cases come from fuzzing the config and flow loaders (tests/fuzz, targets
``config`` and ``flow``) and from reviewing the code paths the fuzzer reached.
"""

from __future__ import annotations

import gc
import time

import pytest
import yaml

from callbridge.app.config import config_from
from callbridge.ivr import load_flow_text
from callbridge.yamlsource import MAX_DEPTH, MAX_VALUES, SourceError, load_yaml_text


def _bomb(levels: int) -> str:
    """Each level lists the previous one ten times: 10**levels values from a few hundred bytes."""
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 10)}]" for n in range(1, levels)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(("text", "line", "column", "fragment"), [
    pytest.param("server:\n  host: a\x00b\n", 2, 10, "character #x0 is not allowed", id="nul"),  # found by fuzzing
    pytest.param("a: \x07\n", 1, 4, "character #x7 is not allowed", id="bel"),
    pytest.param("a: &x [*x]\n", 1, 4, "an alias refers to a value that contains it", id="recursive-list"),
    pytest.param("a: &x {b: *x}\n", 1, 4, "an alias refers to a value that contains it", id="recursive-map"),
    pytest.param("[" * 1000, 1, 1, "nested too deeply", id="composer-recursion"),
    pytest.param("[" * (MAX_DEPTH + 2) + "]" * (MAX_DEPTH + 2), 1, MAX_DEPTH + 2, f"nested more than {MAX_DEPTH}",
                 id="deep"),
    pytest.param("a: 2001-13-45\n", 1, 4, "month must be in 1..12", id="bad-date"),
    pytest.param("2001-02-30: x\n", 1, 1, "day is out of range", id="bad-date-key"),
    pytest.param("a: " + "1" * 5000 + "\n", 1, 4, "Exceeds the limit", id="int-over-4300-digits"),
    pytest.param(_bomb(7), 1, 37, f"more than {MAX_VALUES} values", id="alias-bomb"),
    # Found by fuzzing (flow): PyYAML's constructors for explicit tags raised IndexError,
    # AttributeError, or built an unhashable key.
    pytest.param("a: !!float ''\n", 1, 4, "unsupported YAML tag tag:yaml.org,2002:float", id="tag-float"),
    pytest.param("a: !!timestamp x\n", 1, 4, "unsupported YAML tag tag:yaml.org,2002:timestamp", id="tag-timestamp"),
    pytest.param("!!set k: 1\n", 1, 1, "unsupported YAML tag tag:yaml.org,2002:set", id="tag-set-key"),
    pytest.param("a: !custom x\n", 1, 4, "unsupported YAML tag !custom", id="tag-local"),
])
def test_bad_text_is_a_located_source_error(text: str, line: int, column: int, fragment: str) -> None:
    started = time.process_time()
    with pytest.raises(SourceError) as caught:
        load_yaml_text(text, "f.yaml")
    assert (caught.value.position.line, caught.value.position.column) == (line, column), str(caught.value)
    assert fragment in caught.value.reason
    assert time.process_time() - started < 2.0  # 10**7 values would take minutes


def test_plain_values_and_str_tags_still_load() -> None:
    text = "a: !!str 15551230000\nb: '12'\nc: 12\nd: 2024-01-02\ne: ~\nf: |\n  x\n"
    value = load_yaml_text(text, "f.yaml").value
    assert value["a"] == "15551230000" and value["b"] == "12" and value["c"] == 12 and value["e"] is None
    assert str(value["d"]) == "2024-01-02" and value["f"] == "x\n"


def test_aliases_within_the_budget_still_expand() -> None:
    located = load_yaml_text("base: &b {a: 1}\nother: *b\nlist: [*b, *b]\n", "f.yaml")
    assert located.value == {"base": {"a": 1}, "other": {"a": 1}, "list": [{"a": 1}, {"a": 1}]}
    assert located.position(("list", 1, "a")).line == 1


def test_loading_does_not_keep_every_file_alive() -> None:
    # The scalar constructor used to be one module-level SafeLoader, whose cache kept every
    # node it had built (and, through the nodes' marks, every file's text) for good.
    text = "server:\n  sip_port: 5070\n" + "".join(f"k{n}: {n}\n" for n in range(100))

    def live_nodes() -> int:
        gc.collect()
        return sum(isinstance(o, yaml.Node) for o in gc.get_objects())

    load_yaml_text(text, "f.yaml")
    before = live_nodes()
    for _ in range(20):
        load_yaml_text(text, "f.yaml")
    assert live_nodes() - before < 50


def test_config_error_under_a_non_ascii_digit_key() -> None:
    # "²".isdigit() is True but int("²") raises: the error's field path held such a key.
    text = "routing:\n  numbers: {'²': nowhere}\n"
    with pytest.raises(SourceError) as caught:
        config_from(load_yaml_text(text, "f.yaml"))
    assert "unknown flow 'nowhere'" in caught.value.reason
    assert caught.value.position.line == 2


def test_flow_loader_gets_the_same_protection() -> None:
    with pytest.raises(SourceError, match="character #x0 is not allowed"):
        load_flow_text("flow: t\nstart: a\x00\n", "f.yaml")
    with pytest.raises(SourceError, match="contains it"):
        load_flow_text("flow: t\nstart: a\nnodes: &n {a: *n}\n", "f.yaml")
