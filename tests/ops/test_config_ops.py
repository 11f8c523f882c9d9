"""The operations keys of the config file, and which keys a reload may change."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from chatserver.config import ConfigError, load_config
from chatserver.core.bans import ServerBan
from chatserver.server.reload import merge, restart_only


def load(tmp_path: Path, text: str):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return load_config(str(path))


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    return [line.split(": ", 1)[1] for line in caught.value.problems]


def test_defaults_keep_the_new_features_off() -> None:
    config = load_config(None)
    assert (config.line.tls_port, config.line.require_tls) == (0, False)
    assert config.line.plaintext_passwords is False
    assert (config.metrics.enabled, config.metrics.listen, config.metrics.port) == (
        False,
        "127.0.0.1",
        9464,
    )
    assert config.bans == ()


def test_bans_are_read_and_normalized(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        '[[bans]]\nmask = "203.0.113.0/24"\nreason = "spam"\n'
        '[[bans]]\naccount = "Mallory"\n'
        '[[bans]]\nmask = "eve"\n',
    )
    assert config.bans == (
        ServerBan("*!*@203.0.113.0/24", "spam", "config"),
        ServerBan("$a:mallory", "", "config"),
        ServerBan("eve!*@*", "", "config"),
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[bans]]\nreason = "x"\n', "bans[0]: expected either mask or account (one of them)"),
        (
            '[[bans]]\nmask = "a"\naccount = "b"\n',
            "bans[0]: expected either mask or account (one of them)",
        ),
        ('[[bans]]\nmask = "*"\n', 'bans[0] mask: refusing a ban that matches everyone, got "*"'),
        ("[[bans]]\nmask = 5\n", "bans[0] mask: expected a string, got 5"),
        (
            '[[bans]]\nmask = "x"\nreasn = "y"\n',
            'bans[0] reasn: unknown key (did you mean "reason"?)',
        ),
        ("bans = 3\n", "bans: expected [[bans]] tables with mask or account, and reason"),
        (
            '[metrics]\nlisten = "localhost"\n',
            '[metrics] listen: expected an IP address such as "127.0.0.1", got "localhost"',
        ),
        (
            "[metrics]\nlag_interval = 0\n",
            "[metrics] lag_interval: expected a number from 0.01 to 60, got 0",
        ),
        (
            "[line]\ntls_port = 70000\n",
            "[line] tls_port: expected an integer from 0 to 65535, got 70000",
        ),
    ],
)
def test_bad_values_are_named(tmp_path: Path, text: str, message: str) -> None:
    assert problems(tmp_path, text) == [message]


def test_listener_conflicts_include_line_tls_and_metrics(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        '[server]\nlisten = ["127.0.0.1"]\n[line]\ntls_port = 6697\n'
        "[metrics]\nenabled = true\nport = 5222\n",
    )
    assert found == [
        "[irc] tls_port: 127.0.0.1:6697 is also used by [line] tls_port (127.0.0.1:6697)",
        "[metrics] port: 127.0.0.1:5222 is also used by [xmpp] port (127.0.0.1:5222)",
    ]


def test_reload_keeps_listeners_and_applies_the_rest() -> None:
    old = load_config(None)
    new = dataclasses.replace(
        old,
        line=dataclasses.replace(old.line, port=1, motd="hi", flood_rate=1.0),
        xmpp=dataclasses.replace(old.xmpp, domain="example.org", idle_timeout=10.0),
        chat=dataclasses.replace(old.chat, topic_max=10, history_in_memory=5),
        metrics=dataclasses.replace(old.metrics, enabled=True, lag_interval=1.0),
        bans=(ServerBan("eve!*@*", "", "config"),),
    )
    merged, refused, changed = merge(old, new)
    assert [(r.key, r.kept, r.wanted) for r in refused] == [
        ("[chat] history_in_memory", 100, 5),
        ("[line] port", 2323, 1),
        ("[xmpp] domain", "localhost", "example.org"),
        ("[metrics] enabled", False, True),
    ]
    assert changed == [
        "[chat] topic_max",
        "[line] flood_rate",
        "[line] motd",
        "[xmpp] idle_timeout",
        "[metrics] lag_interval",
        "[[bans]]",
    ]
    assert (merged.line.port, merged.line.motd, merged.line.flood_rate) == (2323, "hi", 1.0)
    assert (merged.xmpp.domain, merged.xmpp.idle_timeout) == ("localhost", 10.0)
    assert (merged.chat.topic_max, merged.chat.history_in_memory) == (10, 100)
    assert merged.bans == new.bans


@pytest.mark.parametrize(
    ("section", "key", "live"),
    [
        ("storage", "path", False),
        ("server", "data_dir", False),
        ("server", "description", True),
        ("irc", "tls_port", False),
        ("irc", "flood_rate", True),
        ("tls", "certificate", True),
        ("chat", "cloak_secret", False),
        ("chat", "registration", True),
    ],
)
def test_which_keys_need_a_restart(section: str, key: str, live: bool) -> None:
    assert restart_only(section, key) is not live
