from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from chatserver.config import (
    BindPoint,
    Config,
    ConfigError,
    CoreSettings,
    IrcConfig,
    LineConfig,
    ListenAddress,
    bind_points,
    config_keys,
    load_config,
    parse_listen,
)
from chatserver.passwords import hash_password
from tests.app.helpers import EXAMPLE_CONFIG

_HASH = hash_password("gateway")


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "chatserver.toml"
    path.write_text(text)
    return str(path)


def problems_of(path: str | None, **kwargs: str) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as info:
        load_config(path, **kwargs)
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


# -- defaults ----------------------------------------------------------------------------------


def test_defaults() -> None:
    config = load_config(None)
    assert config.server.name == "chatserver.local"
    assert config.server.network == "chatserver"
    assert config.server.data_dir == "var"
    assert config.server.listen == (ListenAddress("0.0.0.0"),)
    assert (config.server.log_format, config.server.log_level) == ("text", "info")
    assert config.storage.backend == "sqlite"
    assert config.storage.path == str(Path("var") / "chatserver.db")
    assert (config.tls.certificate, config.tls.key) == ("", "")
    assert config.line == LineConfig(listen=(ListenAddress("0.0.0.0"),))
    assert (config.line.port, config.line.max_line_bytes) == (2323, 4096)
    assert (config.line.flood_burst, config.line.flood_rate, config.line.flood_max_warnings) == (
        20,
        5.0,
        3,
    )
    assert (config.line.idle_timeout, config.line.ping_timeout, config.line.motd) == (300, 60, "")
    assert (config.irc.enabled, config.irc.port, config.irc.tls_port) == (True, 6667, 6697)
    assert config.irc.max_line_bytes == 512
    assert config.irc.listen == config.server.listen
    assert (config.xmpp.port, config.xmpp.tls_port, config.xmpp.domain) == (5222, 5223, "localhost")
    assert config.xmpp.muc_service == "conference.localhost"
    assert config.xmpp.require_tls is True
    assert config.source == "<defaults>"


def test_chat_section_is_core_settings_with_its_defaults() -> None:
    config = load_config(None)
    assert config.chat == CoreSettings()
    assert config.chat.server_name == config.server.name


def test_every_core_setting_but_server_name_is_a_chat_key() -> None:
    fields = {f.name for f in dataclasses.fields(CoreSettings)}
    assert set(config_keys()["chat"]) == fields - {"server_name", "history_retention"}


def test_history_retention_reaches_the_core(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[history]\nretention = 30\n"))
    assert config.chat.history_retention == 30.0
    with pytest.raises(ConfigError, match="retention"):
        load_config(write(tmp_path, "[history]\nretention = -1\n"))


def test_server_name_reaches_the_core(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[server]\nname = "irc.example.org"\n'))
    assert config.chat.server_name == "irc.example.org"


def test_data_dir_override_moves_the_database(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\ndata_dir = "elsewhere"\n')
    config = load_config(path, data_dir_override=str(tmp_path / "d"))
    assert config.server.data_dir == str(tmp_path / "d")
    assert config.storage.path == str(tmp_path / "d" / "chatserver.db")
    assert config.data_path("tls.crt") == tmp_path / "d" / "tls.crt"
    assert config.data_dir == tmp_path / "d"


def test_explicit_storage_path_is_kept(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, '[storage]\npath = "/srv/chat.db"\n'), data_dir_override="x"
    )
    assert config.storage.path == "/srv/chat.db"


def test_postgresql_backend_takes_a_dsn(tmp_path: Path) -> None:
    dsn = "postgresql://chat:pw@db.example.org:5432/chatserver"
    config = load_config(write(tmp_path, f'[storage]\nbackend = "postgresql"\ndsn = "{dsn}"\n'))
    assert (config.storage.backend, config.storage.dsn) == ("postgresql", dsn)


def test_postgresql_backend_without_dsn_or_with_a_bad_one_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, '[storage]\nbackend = "postgresql"\n')
    assert problems_of(path) == (
        f'{path}: [storage] dsn: must be set when backend is "postgresql"',
    )
    path = write(tmp_path, '[storage]\nbackend = "postgresql"\ndsn = "mysql://x/y"\n')
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}: [storage] dsn: expected a postgresql://")
    path = write(tmp_path, '[storage]\nbackend = "oracle"\n')
    (problem,) = problems_of(path)
    assert '"sqlite", "postgresql"' in problem


def test_values_are_read(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[server]
listen = ["127.0.0.1", "::1"]
log_format = "json"
[chat]
registration = "closed"
history_flush_interval = 0
max_connections_per_address = 0
[line]
port = 4000
listen = ["[::1]:7000"]
flood_rate = 2
motd = \"\"\"Welcome
to the test\"\"\"
[irc]
enabled = false
tls_port = 0
listen = ["10.0.0.1"]
[xmpp]
domain = "chat.example.org"
""",
    )
    config = load_config(path)
    assert config.server.listen == (ListenAddress("127.0.0.1"), ListenAddress("::1"))
    assert config.server.log_format == "json"
    assert config.chat.registration == "closed"
    assert config.chat.history_flush_interval == 0.0
    assert config.chat.max_connections_per_address == 0
    assert config.line.port == 4000
    assert config.line.flood_rate == 2.0 and isinstance(config.line.flood_rate, float)
    assert config.line.motd == "Welcome\nto the test"
    assert config.line.listen == (ListenAddress("::1", 7000),)
    assert config.xmpp.listen == config.server.listen
    assert config.irc == IrcConfig(enabled=False, tls_port=0, listen=(ListenAddress("10.0.0.1"),))
    assert config.xmpp.muc_service == "conference.chat.example.org"
    assert config.source == path


def test_config_is_frozen() -> None:
    config = load_config(None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.line.port = 1  # type: ignore[misc]


# -- the example file --------------------------------------------------------------------------


def test_example_config_equals_the_defaults() -> None:
    assert load_config(str(EXAMPLE_CONFIG)) == load_config(None)


def test_example_config_lists_every_key() -> None:
    example = tomllib.loads(EXAMPLE_CONFIG.read_text())
    keys = config_keys()
    assert list(example) == list(keys)
    for section, defaults in keys.items():
        missing = set(defaults) - set(example[section])
        assert not missing, (
            f"add these keys to deploy/chatserver.example.toml [{section}]: {missing}"
        )


def test_example_config_documents_every_key() -> None:
    # Each key is preceded by a comment, or shares the comment of the key group just above it.
    lines = EXAMPLE_CONFIG.read_text().splitlines()
    for index, line in enumerate(lines):
        if "=" in line and not line.startswith("#") and not line.startswith(" "):
            previous = lines[index - 1]
            assert previous.startswith("#") or "=" in previous, f"no comment before {line!r}"


# -- listen addresses --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("0.0.0.0", "0.0.0.0", None),
        ("127.0.0.1:2323", "127.0.0.1", 2323),
        ("::", "::", None),
        ("::1", "::1", None),
        ("[::1]", "::1", None),
        ("[::1]:6667", "::1", 6667),
        ("[0:0::1]:1", "::1", 1),
        ("[fe80::1]:65535", "fe80::1", 65535),
    ],
)
def test_parse_listen(text: str, host: str, port: int | None) -> None:
    assert parse_listen(text) == ListenAddress(host, port)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "localhost",
        "localhost:2323",
        " 127.0.0.1",
        "127.0.0.1:",
        "127.0.0.1:0",
        "127.0.0.1:65536",
        "127.0.0.1:http",
        "1.2.3:80",
        "[::1",
        "[::1]:",
        "[::1]x",
        "[127.0.0.1]:80",
    ],
)
def test_parse_listen_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_listen(text)


@pytest.mark.parametrize(
    ("address", "text"),
    [
        (ListenAddress("0.0.0.0"), "0.0.0.0"),
        (ListenAddress("127.0.0.1", 2323), "127.0.0.1:2323"),
        (ListenAddress("::1", 6667), "[::1]:6667"),
        (ListenAddress("::"), "::"),
    ],
)
def test_listen_address_round_trips(address: ListenAddress, text: str) -> None:
    assert str(address) == text
    assert parse_listen(text) == address


def test_bind_points_use_entry_ports_and_tls_port() -> None:
    irc = IrcConfig(
        port=6667,
        tls_port=6697,
        listen=(ListenAddress("127.0.0.1"), ListenAddress("::1", 7000), ListenAddress("127.0.0.1")),
    )
    assert bind_points(irc) == (
        BindPoint("127.0.0.1", 6667, False, "port"),
        BindPoint("::1", 7000, False, "listen"),
        BindPoint("127.0.0.1", 6697, True, "tls_port"),
        BindPoint("::1", 6697, True, "tls_port"),
    )
    assert str(bind_points(irc)[3]) == "[::1]:6697"


def test_bind_points_without_tls() -> None:
    line = LineConfig(port=2323, listen=(ListenAddress("0.0.0.0"),))
    assert bind_points(line) == (BindPoint("0.0.0.0", 2323, False, "port"),)
    irc = IrcConfig(tls_port=0, listen=(ListenAddress("0.0.0.0"),))
    assert [p.tls for p in bind_points(irc)] == [False]


# -- errors: file, section, key and reason -----------------------------------------------------


def test_the_documented_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("chatserver.toml").write_text('[line]\nport = "abc"\n')
    assert problems_of("chatserver.toml") == (
        'chatserver.toml: [line] port: expected an integer from 1 to 65535, got "abc"',
    )


BAD_VALUES = [
    ('[line]\nport = "abc"', '[line] port: expected an integer from 1 to 65535, got "abc"'),
    ("[line]\nport = 0", "[line] port: expected an integer from 1 to 65535, got 0"),
    ("[line]\nport = 65536", "[line] port: expected an integer from 1 to 65535, got 65536"),
    ("[line]\nport = true", "[line] port: expected an integer from 1 to 65535, got true"),
    ("[line]\nport = 23.5", "[line] port: expected an integer from 1 to 65535, got 23.5"),
    ("[irc]\ntls_port = -1", "[irc] tls_port: expected an integer from 0 to 65535, got -1"),
    ("[xmpp]\ntls_port = 70000", "[xmpp] tls_port: expected an integer from 0 to 65535, got 70000"),
    ('[line]\nenabled = "yes"', '[line] enabled: expected true or false, got "yes"'),
    ("[xmpp]\nrequire_tls = 1", "[xmpp] require_tls: expected true or false, got 1"),
    ("[line]\nflood_rate = 0", "[line] flood_rate: expected a number greater than 0, got 0"),
    (
        '[line]\nflood_rate = "fast"',
        '[line] flood_rate: expected a number greater than 0, got "fast"',
    ),
    ("[line]\nflood_rate = nan", "[line] flood_rate: expected a number greater than 0, got nan"),
    ("[line]\nflood_burst = 0", "[line] flood_burst: expected an integer of at least 1, got 0"),
    (
        "[line]\nflood_max_warnings = -1",
        "[line] flood_max_warnings: expected an integer of at least 0, got -1",
    ),
    (
        '[line]\nidle_timeout = "5m"',
        '[line] idle_timeout: expected a number of at least 1, got "5m"',
    ),
    ("[line]\nping_timeout = 0.5", "[line] ping_timeout: expected a number of at least 1, got 0.5"),
    (
        "[line]\nmax_line_bytes = 10",
        "[line] max_line_bytes: expected an integer from 64 to 1048576, got 10",
    ),
    ("[line]\nmotd = 3", "[line] motd: expected a string, got 3"),
    (
        "[irc]\nmax_line_bytes = 100",
        "[irc] max_line_bytes: expected an integer from 512 to 65536, got 100",
    ),
    (
        '[server]\nlog_format = "xml"',
        '[server] log_format: expected one of "text", "json", got "xml"',
    ),
    (
        '[server]\nlog_level = "loud"',
        '[server] log_level: expected one of "debug", "info", "warn", "error", "critical", got "loud"',
    ),
    (
        '[server]\nname = "my server"',
        '[server] name: expected a host name such as chat.example.org, got "my server"',
    ),
    ('[server]\nname = ""', '[server] name: expected a host name such as chat.example.org, got ""'),
    (
        '[server]\nnetwork = "My Net"',
        "[server] network: expected a name of letters, digits, '.', '_' and '-', got \"My Net\"",
    ),
    ('[server]\ndata_dir = ""', '[server] data_dir: expected a directory path, got ""'),
    ("[server]\ndescription = []", "[server] description: expected a string, got []"),
    (
        "[server]\nlisten = []",
        '[server] listen: expected a list, each entry an address like "0.0.0.0", "127.0.0.1:2323", "::" or "[::1]:2323", got []',
    ),
    (
        '[server]\nlisten = "0.0.0.0"',
        '[server] listen: expected a list, each entry an address like "0.0.0.0", "127.0.0.1:2323", "::" or "[::1]:2323", got "0.0.0.0"',
    ),
    (
        '[line]\nlisten = ["127.0.0.1", "localhost"]',
        '[line] listen[1]: expected an address like "0.0.0.0", "127.0.0.1:2323", "::" or "[::1]:2323", got "localhost"',
    ),
    (
        "[irc]\nlisten = [6667]",
        '[irc] listen[0]: expected an address like "0.0.0.0", "127.0.0.1:2323", "::" or "[::1]:2323", got 6667',
    ),
    (
        '[chat]\nregistration = "maybe"',
        '[chat] registration: expected one of "open", "closed", "invite", got "maybe"',
    ),
    (
        '[chat]\nguest_prefix = "9x"',
        '[chat] guest_prefix: expected the start of a nick, such as Guest, got "9x"',
    ),
    (
        "[chat]\nscram_iterations = 100",
        "[chat] scram_iterations: expected an integer from 4096 to 10000000, got 100",
    ),
    (
        "[chat]\nhistory_flush_interval = -1",
        "[chat] history_flush_interval: expected a number from 0 to 3600, got -1",
    ),
    (
        "[chat]\nmin_password_length = 0",
        "[chat] min_password_length: expected an integer from 1 to 1024, got 0",
    ),
    ("[chat]\ncloak_secret = 5", "[chat] cloak_secret: expected a string, got 5"),
    (
        '[chat]\nserver_name = "x.org"',
        "[chat] server_name: unknown key (the server name is [server] name)",
    ),
    (
        '[storage]\nbackend = "postgres"',
        '[storage] backend: expected one of "sqlite", "postgresql", got "postgres"',
    ),
    ("[storage]\npath = 1", "[storage] path: expected a path, got 1"),
    (
        '[xmpp]\ndomain = "not a domain"',
        '[xmpp] domain: expected a domain name such as example.org, got "not a domain"',
    ),
    (
        '[xmpp]\nmuc_service = "LocalHost"',
        "[xmpp] muc_service: must differ from domain (rooms and users are both addressed by it)",
    ),
    ("[line]\nprot = 2323", '[line] prot: unknown key (did you mean "port"?)'),
    ("[irc]\nsasl = true", "[irc] sasl: unknown key"),
    ("[lines]\nport = 1", '[lines]: unknown section (did you mean "line"?)'),
    ('name = "x"', "name: keys belong in a section such as [server]"),
    ("server = 5", "[server]: expected a table, got 5"),
    (
        '[tls]\ncertificate = "/nonexistent/cert.pem"',
        "[tls] key: must be set when certificate is set (or leave both empty)",
    ),
    (
        '[tls]\nkey = "/nonexistent/key.pem"',
        "[tls] certificate: must be set when key is set (or leave both empty)",
    ),
    (
        '[tls]\ncertificate = "/nonexistent/c.pem"\nkey = "/nonexistent/k.pem"',
        '[tls] certificate: no such file: "/nonexistent/c.pem"',
    ),
    (
        "[line]\nport = 6667",
        "[irc] port: 0.0.0.0:6667 is also used by [line] port (0.0.0.0:6667)",
    ),
    (
        '[server]\nlisten = ["0.0.0.0", "::"]\n[irc]\nenabled = false\n[xmpp]\nenabled = false',
        "[line] port: [::]:2323 is also used by [line] port (0.0.0.0:2323)",
    ),
    (
        '[line]\nlisten = ["127.0.0.1:5222"]',
        "[xmpp] port: 0.0.0.0:5222 is also used by [line] listen (127.0.0.1:5222)",
    ),
    (
        '[web]\nallowed_origins = ["example.org"]',
        '[web] allowed_origins[0]: expected an origin like "https://example.org", got "example.org"',
    ),
    ("[web]\nport = 6667", "[web] port: 0.0.0.0:6667 is also used by [irc] port (0.0.0.0:6667)"),
    (
        '[[webirc]]\nname = "lounge"\npassword = "plain"\nhosts = ["10.0.0.1"]',
        "webirc[0] password: expected a hash made by `chatserver hash-password` (scrypt$...)",
    ),
    (
        '[[webirc]]\nname = "lounge"\npassword = "%s"\nhosts = ["nowhere"]' % _HASH,
        'webirc[0] hosts[0]: expected an address or network like "10.0.0.0/8", got "nowhere"',
    ),
]


@pytest.mark.parametrize(
    ("text", "message"),
    BAD_VALUES,
    ids=[m.split(":")[0] + "|" + t.split("\n")[-1] for t, m in BAD_VALUES],
)
def test_each_problem_names_file_key_and_reason(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text + "\n")
    assert f"{path}: {message}" in problems_of(path)


def test_no_conflict_between_distinct_addresses_or_disabled_protocols(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[line]\nport = 6667\nlisten = ["127.0.0.1"]\n[irc]\nlisten = ["127.0.0.2"]\n'
        '[xmpp]\nenabled = false\nport = 2323\nlisten = ["::1"]\n',
    )
    config = load_config(path)
    assert config.line.port == config.irc.port == 6667


def test_ipv6_loopback_does_not_conflict_with_ipv4_wildcard(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\nlisten = ["0.0.0.0", "::1"]\n')
    assert load_config(path).line.listen == (ListenAddress("0.0.0.0"), ListenAddress("::1"))


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, '[line]\nport = "x"\nbogus = 1\n[server]\nlog_level = 3\n[nope]\n')
    problems = problems_of(path)
    assert len(problems) == 4
    assert all(p.startswith(f"{path}: ") for p in problems)
    assert {p.split(": ")[1] for p in problems} == {
        "[line] port",
        "[line] bogus",
        "[server] log_level",
        "[nope]",
    }


def test_toml_syntax_error(tmp_path: Path) -> None:
    path = write(tmp_path, "[line]\nport = \n")
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}: not valid TOML: ")
    assert "line 2" in problem


def test_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.toml")
    assert problems_of(path) == (f"{path}: cannot read the file: No such file or directory",)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('[server]\ndescription = "caf\xe9"\n'.encode("latin-1"))
    assert problems_of(str(path)) == (f"{path}: the file is not UTF-8 text",)


def test_empty_data_dir_override() -> None:
    assert problems_of(None, data_dir_override="") == (
        "--data-dir: expected a directory path, got an empty string",
    )


def test_config_error_is_not_a_partial_config(tmp_path: Path) -> None:
    path = write(tmp_path, "[line]\nport = 0\n")
    with pytest.raises(ConfigError):
        load_config(path)
    assert isinstance(load_config(write(tmp_path, "[line]\nport = 1\n")), Config)
