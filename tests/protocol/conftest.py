"""The protocol's tests that start a server run on each socket layer (the codec's run once)."""

import pytest


@pytest.fixture
def start_server(socket_layer, start_server):
    """The shared ``start_server``, once on each socket layer."""
    return start_server
