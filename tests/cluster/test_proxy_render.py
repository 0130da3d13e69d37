"""Kamailio's generated config (checked by the real kamailio -c) and each worker's generated config.

Every value in Kamailio's config comes from a config file or the command line: a quote or a newline
in one of them must be refused, never written into routing logic.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from callbridge.app.cluster import kamailio
from callbridge.app.cluster.kamailio import ProxyConfigError, ProxySettings, Worker
from callbridge.app.cluster.workerconf import LayoutError, Shared, plan, worker_config, write_worker_config
from callbridge.app.config import Config, load_config
from tests.interop.conftest import require_tool

DISPATCHER_LIST = """{
\tNRSETS: 1
\tRECORDS: {
\t\tSET: {
\t\t\tID: 1
\t\t\tTARGETS: {
\t\t\t\tDEST: {
\t\t\t\t\tURI: sip:127.0.0.1:25062
\t\t\t\t\tFLAGS: IP
\t\t\t\t\tPRIORITY: 0
\t\t\t\t}
\t\t\t\tDEST: {
\t\t\t\t\tURI: sip:127.0.0.1:25061
\t\t\t\t\tFLAGS: AP
\t\t\t\t}
\t\t\t}
\t\t}
\t}
}
"""


def settings(tmp_path: Path, **changes) -> ProxySettings:
    values = dict(host="127.0.0.1", sip_port=25060,
                  workers=(Worker("w1", "127.0.0.1", 25061), Worker("w2", "127.0.0.1", 25062)),
                  runtime_dir=tmp_path / "kamailio", source_header="X-Source-IP",
                  exempt_cidrs=("54.172.60.0/30", "10.0.0.5/8", "2001:db8::/32"), flood_requests=100,
                  flood_window_s=2)
    values.update(changes)
    return ProxySettings(**values)


def test_the_rendered_config_is_valid_for_kamailio(tmp_path):
    files = kamailio.write_proxy_files(settings(tmp_path))
    check = subprocess.run([require_tool("kamailio"), "-c", "-f", str(files.config)], capture_output=True,
                           text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    text = files.config.read_text()
    assert "{{" not in text
    # Trunk networks normalised, each its own test; the workers' own list is the dispatcher file.
    assert 'is_in_subnet("$si", "10.0.0.0/8")' in text and 'is_in_subnet("$si", "2001:db8::/32")' in text
    assert f'modparam("ctl", "binrpc", "unix:{files.ctl_socket}")' in text
    assert 'append_hf("X-Source-IP: $si;port=$sp;proto=$pr\\r\\n")' in text
    assert files.dispatcher_list.read_text().splitlines()[1:] == [
        "1 sip:127.0.0.1:25061 0 0 duid=w1", "1 sip:127.0.0.1:25062 0 0 duid=w2"]
    assert oct(files.config.parent.stat().st_mode & 0o777) == "0o700"  # the ctl socket is an admin door


def test_ipv6_listen_addresses_are_bracketed(tmp_path):
    text = kamailio.render_config(settings(tmp_path, host="::1", workers=(Worker("w1", "::1", 25061),)))
    assert "listen=udp:[::1]:25060" in text and "listen=tcp:[::1]:25060" in text
    assert kamailio.render_dispatcher_list([Worker("w1", "::1", 25061)]).splitlines()[1] == \
        "1 sip:[::1]:25061 0 0 duid=w1"


@pytest.mark.parametrize(("changes", "message"), [
    ({"source_header": 'X-Source-IP")\nexit;\n#'}, "is not a header name"),
    ({"exempt_cidrs": ('10.0.0.0/8"); exit; #',)}, "is not an IP network"),
    ({"host": "127.0.0.1\nlisten=udp:0.0.0.0:5060"}, "must be an IP address"),
    ({"host": "0.0.0.0"}, "is a wildcard"),
    ({"runtime_dir": Path('/tmp/x"\nloadmodule "exec.so"')}, "absolute path of letters"),
    ({"runtime_dir": Path("/tmp/a b")}, "absolute path of letters"),
    ({"runtime_dir": Path("/tmp/../etc/kamailio")}, "absolute path of letters"),
    ({"runtime_dir": Path("/tmp/" + "d" * 100)}, "choose a shorter --data-dir"),
    ({"sip_port": 70000}, "is not a port"),
    ({"flood_requests": True}, "must be a positive whole number"),
    ({"flood_window_s": 0}, "must be a positive whole number"),
])
def test_values_that_could_change_the_routing_logic_are_refused(tmp_path, changes, message):
    with pytest.raises(ProxyConfigError) as refused:
        kamailio.render_config(settings(tmp_path, **changes))
    assert message in str(refused.value)


def test_worker_ids_and_ports_in_the_dispatcher_list_are_checked():
    with pytest.raises(ProxyConfigError, match="is not a plain name"):
        kamailio.render_dispatcher_list([Worker("w1 0 0\n1 sip:evil.example", "127.0.0.1", 25061)])
    with pytest.raises(ProxyConfigError, match="is not a port"):
        kamailio.render_dispatcher_list([Worker("w1", "127.0.0.1", 0)])


def test_every_placeholder_needs_a_value_and_every_value_a_placeholder():
    assert kamailio.fill("a {{X}} b", {"X": "1"}) == "a 1 b"
    with pytest.raises(ProxyConfigError, match="has no value"):
        kamailio.fill("a {{X}} {{Y}}", {"X": "1"})
    with pytest.raises(ProxyConfigError, match="lacks"):
        kamailio.fill("a {{X}}", {"X": "1", "Y": "2"})


def test_dispatcher_list_output_is_read_per_destination():
    states = kamailio.parse_dispatcher_states(DISPATCHER_LIST)
    assert states == {"sip:127.0.0.1:25062": "IP", "sip:127.0.0.1:25061": "AP"}
    assert [kamailio.is_up(f) for f in ("AP", "AX", "IP", "DX")] == [True, False, False, False]
    assert kamailio.parse_dispatcher_states("error: 500 - no destinations\n") == {}


BASE = """
server: {host: 127.0.0.1, sips_port: 5061, tls: {cert: c.pem, key: k.pem}, max_calls: 7,
         trusted_proxies: [10.9.0.0/16]}
media: {rtp_port_min: 20000, rtp_port_max: 20999}
flows: {sales: flows/sales.yaml}
agents: [{name: bot, intents: brain/intents.yaml}]
outbound_trunks: [{name: carrier, host: pstn.example, register: {username: u, password: p}}]
cluster: {rtp_ports_per_worker: 300, workers: 3}
"""


def base_config(tmp_path) -> Config:
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "sales.yaml").write_text("start: hello\nnodes:\n  hello: {say: hi, next: end}\n")
    path = tmp_path / "base.yaml"
    path.write_text(BASE)
    return load_config(path)


def test_each_worker_gets_its_own_ports_and_rtp_slice_and_the_shared_settings(tmp_path):
    config = base_config(tmp_path)
    layout = plan(config, workers=3, host="127.0.0.1", sip_port=5060, http_port=8080, data_dir=tmp_path / "data")
    assert [(w.worker_id, w.sip_port, w.http_port, w.rtp_port_min, w.rtp_port_max) for w in layout.workers] == [
        ("w1", 5061, 8080, 20000, 20299), ("w2", 5062, 8081, 20300, 20599), ("w3", 5063, 8082, 20600, 20899)]
    assert layout.redis_port == 8083 and layout.redis_url == "redis://127.0.0.1:8083/0"
    shared = Shared("t" * 32, "postgresql://db/cb", tmp_path / "data" / "secret.key")
    document = worker_config(config, layout, layout.workers[1], shared)
    server = document["server"]
    assert (server["sip_port"], server["http_port"], server["max_calls"]) == (5062, 8081, 7)
    assert "sips_port" not in server  # one TLS port cannot be shared by N workers
    assert server["trusted_proxies"] == ["127.0.0.1/32"]  # Kamailio only, not the base's list
    assert server["data_dir"] == str((tmp_path / "data" / "workers" / "w2").resolve())
    assert document["cluster"] == {"rtp_ports_per_worker": 300, "workers": 3, "redis_url": "redis://127.0.0.1:8083/0",
                                   "worker_id": "w2", "api_url": "http://127.0.0.1:8081",
                                   "sip_uri": "sip:127.0.0.1:5062"}
    assert document["api"]["token"] == "t" * 32 and document["database"]["url"] == "postgresql://db/cb"
    # Paths the base resolved against its own folder stay pointing there from the worker's file.
    assert document["flows"] == {"sales": str(tmp_path / "flows" / "sales.yaml")}
    assert document["agents"][0]["intents"] == str(tmp_path / "brain" / "intents.yaml")
    assert document["outbound_trunks"][0]["register"] == {"username": "u", "password": "p"}
    assert config.server.sip_port == 5060 and config.server.trusted_proxies == ["10.9.0.0/16"]  # base untouched


def test_the_written_worker_config_loads_as_a_config(tmp_path):
    config = base_config(tmp_path)
    (tmp_path / "brain").mkdir()
    layout = plan(config, workers=2, host="127.0.0.1", sip_port=5060, http_port=8080, data_dir=tmp_path / "data")
    path = write_worker_config(config, layout, layout.workers[0], Shared("t" * 32, "sqlite:////x.db", None))
    assert oct(path.stat().st_mode & 0o777) == "0o600"  # the token and trunk passwords are in it
    loaded = load_config(path)
    assert (loaded.cluster.worker_id, loaded.media.rtp_port_min, loaded.media.rtp_port_max) == ("w1", 20000, 20299)
    assert loaded.flows["sales"] == tmp_path / "flows" / "sales.yaml"
    assert "secret_key_file" not in yaml.safe_load(path.read_text()).get("security", {})


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"workers": 4}, "4 workers x cluster.rtp_ports_per_worker 300 = 1200 RTP ports"),
    ({"sip_port": 8079}, "port 8080 would be both"),
    ({"sip_port": 65535}, "they run past 65535"),
])
def test_layouts_that_do_not_fit_are_refused(tmp_path, kwargs, message):
    config = base_config(tmp_path)
    args = {"workers": 2, "host": "127.0.0.1", "sip_port": 5060, "http_port": 8080, "data_dir": tmp_path} | kwargs
    with pytest.raises(LayoutError) as refused:
        plan(config, **args)
    assert message in str(refused.value)
