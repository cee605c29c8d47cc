"""The ``sqlite`` store backend plugin: metadata in SQLite, message bodies as files."""

from twisted.plugin import IPlugin
from zope.interface import implementer

from mailsuite.interfaces import IStoreBackend


@implementer(IPlugin, IStoreBackend)
class SQLiteStoreBackend:
    name = "sqlite"

    def open(self, path, *, runner):
        from mailsuite.store.sqlite import SQLiteMailStore

        return SQLiteMailStore(path, runner=runner)


backend = SQLiteStoreBackend()
