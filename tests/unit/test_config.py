"""Config loading: every mistake names file:line:column, and the CLI exits with 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from callbridge.app.cli import main
from callbridge.app.config import load_config
from callbridge.yamlsource import SourceError


def write(tmp_path, text):
    path = tmp_path / "callbridge.yaml"
    path.write_text(text)
    return path


def test_valid_config_loads(tmp_path):
    config = load_config(write(tmp_path, """
server:
  sip_port: 5070
inbound_trunks:
  - name: twilio
    allowed_cidrs: [54.172.60.0/30]
    auth: {username: u, password: p}
"""))
    assert config.server.sip_port == 5070
    assert config.inbound_trunks[0].auth.algorithms == ["MD5", "SHA-256"]


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("server:\n  sip_port: 99999\n", 2, "less than or equal to 65535"),
        ("server:\n  sip_prot: 5060\n", 2, "unknown key"),
        ("inbound_trunks:\n  - name: a\n    allowed_cidrs: [not-a-net]\n", 3, "not an IP network"),
        ("media:\n  codecs: [OPUS]\n", 2, "codecs must be from"),
        ("server:\n  sip_port: [1\n", 3, "YAML syntax error"),
        ("server:\n  host: a\n  host: b\n", 3, "duplicate key"),
        ("inbound_trunks:\n  - name: a\n  - name: a\n", 1, "duplicate trunk names"),
        ("server:\n  sips_port: 5061\n", 2, "needs tls"),
        ("server:\n  nice: -40\n", 2, "greater than or equal to -20"),
        ("media:\n  dtmf_inband: sometimes\n", 2, "'auto', 'always' or 'never'"),
        ("media:\n  media_timeout_s: 0\n", 2, "greater than or equal to 1"),
        ("media:\n  media_timeout_s: .nan\n", 2, "finite number"),
        ("media:\n  media_timeout_s: .inf\n", 2, "finite number"),
        ("media:\n  media_timeout_s: soon\n", 2, "valid number"),
        ("media:\n  codecs: [PCMU]\n  music_on_hold: /nonexistent/hold.wav\n", 3, "cannot read /nonexistent/hold.wav"),
        ("media:\n  music_on_hold: /etc/passwd\n", 2, "not a RIFF/WAVE file"),
        ("agents:\n  - name: a\n    provider: nova_sonic\n    nova_sonic: {regoin: us-east-1}\n", 4,
         "unknown setting regoin"),
        ("agents:\n  - name: a\n    openai_realtime: {voice: marin}\n", 2, "provider is local"),
        ("agents:\n  - name: a\n    provider: openai_realtime\n    openai_realtime: {audio_format: opus}\n", 4,
         "audio_format"),
        ("agents:\n  - name: a\n    llm: {base_url: ftp://x, model: m}\n", 3, "should match pattern"),
        ("agents:\n  - name: a\n    tools: [lookup_order, launch_rocket]\n", 3, "unknown tools ['launch_rocket']"),
    ],
)
def test_errors_name_the_line(tmp_path, text, line, fragment):
    path = write(tmp_path, text)
    with pytest.raises(SourceError) as caught:
        load_config(path)
    assert caught.value.position.line == line, str(caught.value)
    assert caught.value.position.file == str(path)
    assert fragment in caught.value.reason


def test_cli_config_error_exits_2_with_location(tmp_path, capsys):
    path = write(tmp_path, "server:\n  http_port: nope\n")
    assert main(["serve", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:2:" in err and "http_port" in err


def test_check_config_ok(tmp_path, capsys):
    path = write(tmp_path, "demo:\n  operator_uri: sip:op@127.0.0.1\n")
    assert main(["check-config", str(path)]) == 0


@pytest.mark.parametrize("command", [[], ["serve"], ["check-config"]])
def test_every_command_has_help(command):
    result = subprocess.run([sys.executable, "-m", "callbridge.app.cli", *command, "--help"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "usage: callbridge" in result.stdout
