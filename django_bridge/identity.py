"""How Django objects are keyed when a template varies on them.

- A model instance is ``app_label.model:pk``, so two users with the same
  ``__str__`` are two variants, and a product whose pk equals a user's pk
  is not that user.  A model listed in ``FRAGCACHE["VERSION_FIELDS"]``
  (``{"shop.product": "updated_at"}``) adds that field, as Rails'
  ``cache_key_with_version`` does: saving the row makes a new key.  An
  unsaved instance has no identity and is refused.
- ``AnonymousUser`` is a token no model or username can produce.
- A lazy object (``request.user`` is one) is keyed by what it wraps.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.db.models import Model
from django.utils.functional import LazyObject, empty

from jinja_fragcache.identity import VaryIdentity

from .conf import settings

#: The identity of every anonymous visitor; it holds no ``:``, which every
#: model's identity does.
ANONYMOUS = "django.anonymous-user"


def model_identity(instance: Model) -> str | None:
    """``app_label.model:pk``, plus the version field if one is set."""
    if instance.pk is None:
        return None
    label = instance._meta.label_lower
    identity = f"{label}:{instance.pk}"
    field = (settings.VERSION_FIELDS or {}).get(label)
    if field:
        version = getattr(instance, field)
        stamp = version.isoformat() if hasattr(version, "isoformat") else version
        identity = f"{identity}:{stamp}"
    return identity


def django_identity() -> VaryIdentity:
    """A :class:`VaryIdentity` that knows models, users and lazy objects."""
    identity = VaryIdentity()

    def unwrap(lazy: Any) -> str:
        if lazy._wrapped is empty:
            lazy._setup()
        return identity.string(lazy._wrapped)

    identity.register(Model, model_identity)
    identity.register(AnonymousUser, lambda user: ANONYMOUS)
    # The wrapped value's identity, already marked: returned as it is.
    identity.register_raw(LazyObject, unwrap)
    return identity
