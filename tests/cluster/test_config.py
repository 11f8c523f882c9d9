"""[cluster]: off by default; with a Redis URL, a node name is required."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatserver.cluster.address import RedisAddress, parse_url
from chatserver.config import ConfigError, load_config


def load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "chatserver.toml"
    path.write_text(text)
    return load_config(str(path))


def test_off_by_default() -> None:
    assert load_config(None).cluster.redis == ""


SECRET = '[chat]\ncloak_secret = "one for every node"\n'


def test_a_node_name_is_required_with_redis(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[cluster\] node: must be set when redis is set"):
        load(tmp_path, SECRET + '[cluster]\nredis = "redis://127.0.0.1:6379/0"\n')
    config = load(
        tmp_path, SECRET + '[cluster]\nredis = "redis://127.0.0.1:6379/2"\nnode = "a-1"\n'
    )
    assert config.cluster.node == "a-1"  # type: ignore[attr-defined]


def test_a_cloak_secret_is_required_with_redis(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[chat\] cloak_secret: must be set in cluster mode"):
        load(tmp_path, '[cluster]\nredis = "redis://127.0.0.1:6379/0"\nnode = "a"\n')
    # Without a cluster, a process makes up its own at each start.
    assert load(tmp_path, "[chat]\n").chat.cloak_secret == ""  # type: ignore[attr-defined]


def test_bad_values_are_named(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"\[cluster\] redis: expected a redis://host:port/db or unix://"
    ):
        load(tmp_path, '[cluster]\nredis = "http://x"\nnode = "a"\n')
    with pytest.raises(ConfigError, match=r"\[cluster\] node: expected a node name"):
        load(tmp_path, '[cluster]\nredis = "redis://x:1/0"\nnode = "a b"\n')
    with pytest.raises(ConfigError, match=r"\[cluster\] lease"):
        load(tmp_path, "[cluster]\nlease = 0\n")
    for bad in ("-0.001", "1.5", '"2ms"'):
        with pytest.raises(
            ConfigError, match=r"\[cluster\] publish_interval: expected a number from 0 to 1"
        ):
            load(tmp_path, f"[cluster]\npublish_interval = {bad}\n")
    assert load(tmp_path, "[cluster]\npublish_interval = 0\n").cluster.publish_interval == 0  # type: ignore[attr-defined]
    assert load_config(None).cluster.publish_interval == 0.002
    for bad in ("1000", "1.5", '"128M"', "true"):
        with pytest.raises(
            ConfigError,
            match=r"\[cluster\] stream_bytes: expected an integer from 65536 to 1099511627776",
        ):
            load(tmp_path, f"[cluster]\nstream_bytes = {bad}\n")
    assert load(tmp_path, "[cluster]\nstream_bytes = 65536\n").cluster.stream_bytes == 65536  # type: ignore[attr-defined]
    assert load_config(None).cluster.stream_bytes == 128 << 20


def test_the_url_names_host_port_and_database() -> None:
    assert parse_url("redis://db.example.org:6380/3") == RedisAddress("db.example.org", 6380, 3)
    assert parse_url("redis://localhost") == RedisAddress("localhost", 6379, 0)
    for bad in ("rediss://x:1/0", "redis://", "redis://x/db", "redis://x:port/0"):
        with pytest.raises(ValueError):
            parse_url(bad)


def test_a_unix_url_names_the_socket_and_database() -> None:
    assert parse_url("unix:///run/redis/redis.sock?db=2") == RedisAddress(
        "", 0, 2, "/run/redis/redis.sock"
    )
    assert parse_url("unix:///run/redis.sock") == RedisAddress("", 0, 0, "/run/redis.sock")
    # A relative path, a host, a database that is not a number, or an unknown parameter.
    for bad in (
        "unix://run/redis.sock",
        "unix:redis.sock",
        "unix:///r.sock?db=",
        "unix:///r.sock?db=x",
        "unix:///r.sock?db=-1",
        "unix:///r.sock?password=x",
    ):
        with pytest.raises(ValueError):
            parse_url(bad)


def test_the_configuration_takes_either_url_and_names_a_bad_one(tmp_path: Path) -> None:
    url = "unix:///run/redis/redis.sock?db=1"
    config = load(tmp_path, SECRET + f'[cluster]\nredis = "{url}"\nnode = "a"\n')
    assert config.cluster.redis == url  # type: ignore[attr-defined]
    # Refused at load, not when the node first connects.
    for bad in ("unix://run/redis.sock", "redis://x/db", "unix:///r.sock?db=x"):
        with pytest.raises(
            ConfigError,
            match=r"\[cluster\] redis: expected a redis://host:port/db or unix:///path/to/redis.sock\?db=N URL",
        ):
            load(tmp_path, SECRET + f'[cluster]\nredis = "{bad}"\nnode = "a"\n')
