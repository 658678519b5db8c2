"""The storage layer under the Store: the index (SQL), the files, claims, recovery, dispatch.

Nothing here is public API. Modules import only the identity layer
(``entropic.errors``, ``hashing``, ``models``) and, inside this package, the
modules below them; docs/architecture.md lists the order.
"""
