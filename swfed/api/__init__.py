"""The local REST API for clients and admins (DESIGN §7).

One blueprint per module. Handlers parse with ``swfed.core`` validators, run
storage functions through the app's :class:`~swfed.storage.db.Database`, and
raise :class:`~swfed.core.errors.SwfedError` subclasses; ``swfed.app`` turns
those into the JSON error body.
"""
