"""Kafka security (TLS, SASL) from the settings, for Faust and for Weir's own aiokafka clients.

Faust takes `broker_credentials`; the clients Weir opens itself (topic
provisioning, partition re-reads, the generator, `weir watch`) take the same
options as aiokafka keyword arguments, built here from the same credentials so
that every client of a worker connects the same way. The password travels in
the credentials object only: its ``repr`` names the user, never the password.
"""

from __future__ import annotations

import ssl
from typing import Any, Dict, Optional

from faust.auth import SASLCredentials, SSLCredentials
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from faust.types.auth import CredentialsT

from app.settings import Settings


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """TLS context: the CA file (or the system's CAs), an optional client certificate."""
    context = ssl.create_default_context(cafile=settings.kafka_ssl_cafile or None)
    context.check_hostname = settings.kafka_ssl_check_hostname
    if settings.kafka_ssl_certfile:
        context.load_cert_chain(settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile or None)
    return context


def broker_credentials(settings: Settings) -> Optional[CredentialsT]:
    """Faust's ``broker_credentials`` for ``WEIR_KAFKA_SECURITY_PROTOCOL``; None for PLAINTEXT."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return SSLCredentials(ssl_context(settings))
    return SASLCredentials(
        username=settings.kafka_sasl_username,
        password=settings.kafka_sasl_password,
        mechanism=settings.kafka_sasl_mechanism,
        ssl_context=ssl_context(settings) if protocol == "SASL_SSL" else None,
    )


def client_options(settings: Settings) -> Dict[str, Any]:
    """Keyword arguments for AIOKafkaConsumer, AIOKafkaProducer and AIOKafkaAdminClient."""
    options = dict(credentials_to_aiokafka_auth(broker_credentials(settings)))
    return {k: v for k, v in options.items() if v is not None}
