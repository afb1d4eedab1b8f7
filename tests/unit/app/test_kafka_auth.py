"""Kafka TLS and SASL settings: validated at start-up, passed on, the password never shown."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys

import pytest
from faust.auth import SASLCredentials, SSLCredentials

from app.kafka_auth import broker_credentials, client_options
from app.settings import MASK, Settings
from tables.errors import ConfigError

SASL = {"WEIR_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "WEIR_KAFKA_SASL_USERNAME": "weir",
        "WEIR_KAFKA_SASL_PASSWORD": "pa55-word-xyz"}
WEIR = os.path.join(os.path.dirname(sys.executable), "weir")


def test_plaintext_by_default_needs_no_credentials():
    settings = Settings.from_env({})
    assert broker_credentials(settings) is None
    assert client_options(settings) == {"security_protocol": "PLAINTEXT"}


def test_sasl_settings_reach_faust_and_weirs_own_clients():
    settings = Settings.from_env({**SASL, "WEIR_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512"})
    creds = broker_credentials(settings)
    assert isinstance(creds, SASLCredentials)
    assert creds.protocol.value == "SASL_PLAINTEXT" and creds.mechanism.value == "SCRAM-SHA-512"
    assert client_options(settings) == {
        "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "weir", "sasl_plain_password": "pa55-word-xyz"}


def test_sasl_ssl_and_ssl_use_a_tls_context_with_the_ca_file():
    cafile = ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"
    settings = Settings.from_env({**SASL, "WEIR_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                                  "WEIR_KAFKA_SSL_CAFILE": cafile})
    options = client_options(settings)
    assert options["security_protocol"] == "SASL_SSL"
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    tls = broker_credentials(Settings.from_env({"WEIR_KAFKA_SECURITY_PROTOCOL": "SSL",
                                                "WEIR_KAFKA_SSL_CAFILE": cafile}))
    assert isinstance(tls, SSLCredentials) and tls.context.check_hostname


@pytest.mark.parametrize("missing", ["WEIR_KAFKA_SASL_USERNAME", "WEIR_KAFKA_SASL_PASSWORD"])
def test_sasl_without_user_or_password_fails_naming_the_setting(missing):
    env = {k: v for k, v in SASL.items() if k != missing}
    with pytest.raises(ConfigError, match=missing):
        Settings.from_env(env)


@pytest.mark.parametrize("env, value", [("WEIR_KAFKA_SECURITY_PROTOCOL", "TLS"),
                                        ("WEIR_KAFKA_SASL_MECHANISM", "KERBEROS"),
                                        ("WEIR_KAFKA_SSL_CAFILE", "/no/such/ca.pem"),
                                        ("WEIR_METRICS_INTERVAL_MS", "10")])
def test_bad_security_or_metrics_value_fails_naming_the_setting(env, value):
    with pytest.raises(ConfigError, match=env):
        Settings.from_env({env: value})


def test_password_is_in_no_repr():
    settings = Settings.from_env(SASL)
    assert "pa55-word-xyz" not in repr(settings)
    assert "pa55-word-xyz" not in repr(broker_credentials(settings))


def test_weir_settings_prints_the_password_masked():
    proc = subprocess.run([WEIR, "settings"], env={**os.environ, **SASL}, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "pa55-word-xyz" not in proc.stdout + proc.stderr
    assert f"| `WEIR_KAFKA_SASL_PASSWORD` | {MASK} |" in proc.stdout
    assert "| `WEIR_KAFKA_SASL_USERNAME` | weir |" in proc.stdout


def test_an_invalid_password_value_is_not_echoed():
    proc = subprocess.run([WEIR, "settings"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "WEIR_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                               "WEIR_KAFKA_SASL_USERNAME": "weir",
                               "WEIR_KAFKA_SASL_PASSWORD": "pa55-word-xyz",
                               "WEIR_KAFKA_SSL_CAFILE": "/no/such/ca.pem"})
    assert proc.returncode == 2 and "WEIR_KAFKA_SSL_CAFILE" in proc.stderr
    assert "pa55-word-xyz" not in proc.stdout + proc.stderr
