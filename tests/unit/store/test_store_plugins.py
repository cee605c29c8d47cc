"""The sqlite and maildir backends are found as IStoreBackend plugins and open stores."""

import pytest
from twisted.plugin import IPlugin
from zope.interface.verify import verifyObject

from mailsuite.interfaces import IMailStore, IStoreBackend
from mailsuite.plugins.store_maildir import backend as maildir_backend
from mailsuite.plugins.store_sqlite import backend as sqlite_backend
from mailsuite.store.base import inline_runner
from tests.unit.store.storetesting import result


@pytest.mark.parametrize("backend, name", [(sqlite_backend, "sqlite"), (maildir_backend, "maildir")])
def test_backend_plugin_opens_store(backend, name, tmp_path):
    """Each plugin provides IPlugin and IStoreBackend, has its name and opens an IMailStore."""
    assert verifyObject(IPlugin, backend) and verifyObject(IStoreBackend, backend)
    assert backend.name == name
    store = backend.open(str(tmp_path / name), runner=inline_runner)
    assert verifyObject(IMailStore, store)
    assert result(store.append("alice", "INBOX", b"x")).uid == 1
    result(store.close())
