"""Local MQTT brokers for development, emulation and tests: mosquitto and embedded.

``embedded`` runs an in-process broker when no broker URL is given; ``mosquitto``
starts a real mosquitto (persistence on, optional mutual TLS); ``certs`` makes the
throwaway PKI its TLS listener needs. None of them is used on a production device,
which talks to AWS IoT Core or a Greengrass nucleus.

Errors::

    AgentError
    └── BrokerError              a local broker could not start or stop
        └── BrokerMissingError   the broker program is not installed

Modules and their public names:

- ``certs``: ``TestPki``, ``make_test_pki``
- ``embedded``: ``EmbeddedBroker``
- ``mosquitto``: ``MosquittoTls``, ``MosquittoBroker``, ``find_mosquitto``, ``free_port``
"""

from __future__ import annotations

from agent.core.errors import AgentError


class BrokerError(AgentError):
    """A local broker could not be started or stopped."""


class BrokerMissingError(BrokerError):
    """The broker program (e.g. mosquitto) is not installed on this machine."""
