"""Signals of the bridge.

``surrogate_keys_invalidated`` is sent once an invalidation's version
bumps are stored (for one that was queued while the cache was down, once
its replay is), whichever ``FRAGCACHE["SURROGATE_KEYS"]`` style is used
and whether or not ``FRAGCACHE["PURGE"]`` purges a Varnish: connect it to
purge another CDN through its API::

    from django.dispatch import receiver
    from django_bridge.signals import surrogate_keys_invalidated

    @receiver(surrogate_keys_invalidated)
    def purge_fastly(sender, keys, counters, **kwargs):
        fastly.purge_keys(keys)

``keys`` are the surrogate keys to purge (see
:func:`jinja_fragcache.surrogates.purge_keys`), ``counters`` the version
counters that were bumped.  It may be sent from a background thread (a
replay); a receiver that raises is logged and never fails an invalidation.
"""

from __future__ import annotations

from django.dispatch import Signal

surrogate_keys_invalidated = Signal()
