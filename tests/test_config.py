from __future__ import annotations

import pytest

from lightning_stream.config import ServerConfig, is_loopback


@pytest.mark.parametrize("host", ["127.0.0.1", "127.3.2.1", "::1", "[::1]", "localhost", "LOCALHOST", "app.localhost"])
def test_loopback_hosts_are_recognised(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.1", "example.com", "::", "localhost.evil.com"])
def test_non_loopback_hosts_are_recognised(host: str) -> None:
    assert not is_loopback(host)


def test_non_loopback_bind_without_token_says_how_to_fix() -> None:
    with pytest.raises(ValueError, match="pass token="):
        ServerConfig(host="0.0.0.0")


def test_non_loopback_bind_with_token_is_accepted() -> None:
    assert ServerConfig(host="0.0.0.0", token="s3cret-token").token == "s3cret-token"


@pytest.mark.parametrize("port", [-1, 65536, 10**6])
def test_port_out_of_range_is_rejected(port: int) -> None:
    with pytest.raises(ValueError, match="1..65535"):
        ServerConfig(port=port)


def test_port_zero_means_dynamic() -> None:
    assert ServerConfig(port=0).port is None


def test_strict_port_needs_a_port() -> None:
    with pytest.raises(ValueError, match="strict_port"):
        ServerConfig(strict_port=True)


def test_env_is_read_and_overrides_win() -> None:
    env = {"LIGHTNING_STREAM_PORT": "7001", "LIGHTNING_STREAM_HOST": "localhost"}
    config = ServerConfig.from_env(env, port=7002)
    assert (config.host, config.port) == ("localhost", 7002)


def test_bad_env_port_names_the_variable() -> None:
    with pytest.raises(ValueError, match="LIGHTNING_STREAM_PORT"):
        ServerConfig.from_env({"LIGHTNING_STREAM_PORT": "http"})


def test_unknown_option_lists_valid_ones() -> None:
    with pytest.raises(TypeError, match="valid options: .*host"):
        ServerConfig.from_env({}, hots="x")


def test_budget_below_minimum_is_rejected() -> None:
    with pytest.raises(ValueError, match="memory_budget_bytes"):
        ServerConfig(memory_budget_bytes=10)
