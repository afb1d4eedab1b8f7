"""The local broker's optional SASL and SSL listeners, as written to server.properties."""

from app import broker


def props(path):
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


def test_sasl_and_ssl_listeners_are_added_next_to_plaintext(tmp_path):
    keystore = tmp_path / "keystore.pem"
    broker._write_properties(tmp_path, 19092, 19093, sasl_port=19094,
                             sasl_users={"alice": "pw-a"}, ssl_port=19095,
                             ssl_keystore_pem=keystore)
    p = props(tmp_path / "server.properties")
    assert p["listeners"] == ("PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093,"
                              "SASL_PLAINTEXT://127.0.0.1:19094,SSL://127.0.0.1:19095")
    assert p["listener.security.protocol.map"].endswith(",SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL")
    assert 'user_alice="pw-a"' in p["listener.name.sasl_plaintext.plain.sasl.jaas.config"]
    assert p["listener.name.ssl.ssl.keystore.location"] == str(keystore)
    assert p["inter.broker.listener.name"] == "PLAINTEXT"


def test_configured_ports_are_the_plaintext_and_controller_ones_whatever_else_listens(tmp_path):
    broker._write_properties(tmp_path, 19092, 19093, sasl_port=19094, sasl_users={})
    assert broker._configured_ports(tmp_path) == (19092, 19093)


def test_without_extra_ports_only_plaintext_and_controller_listen(tmp_path):
    broker._write_properties(tmp_path, 19092, 19093)
    p = props(tmp_path / "server.properties")
    assert "SASL" not in p["listeners"] and "SSL" not in p["listeners"]
    assert "sasl.enabled.mechanisms" not in p
