"""Vary values with an identity: plain values by str(), objects by identity,
in the core and with Django's models and users in both engines."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser, User
from django.template import engines
from django.utils.functional import SimpleLazyObject

from django_bridge import get_fragment_cache
from django_bridge.identity import ANONYMOUS
from jinja_fragcache import FragmentCacheWarning, make_fragment_key
from jinja_fragcache.identity import MARK, RefusedVaryValue, VaryIdentity
from jinja_fragcache.keys import _key_memo
from tests.djangoapp.models import Product

# -- the core's rules -----------------------------------------------------------------


def test_plain_values_are_keyed_by_str_as_django_does() -> None:
    assert make_fragment_key("card", [42]) == make_fragment_key("card", ["42"])
    assert make_fragment_key("card", [None]) == make_fragment_key("card", ["None"])


def test_an_identity_never_equals_a_plain_string() -> None:
    class Thing:
        def __fragment_key__(self) -> str:
            return "42"

    strings = VaryIdentity().strings([Thing(), "42", MARK + "o:42"])
    assert len(set(strings)) == 3
    assert make_fragment_key("card", [Thing()]) != make_fragment_key("card", ["42"])


def test_plain_values_alone_never_pass_for_an_identity() -> None:
    # Strings and ints alone take a path of their own (no converter call).
    class Thing:
        def __fragment_key__(self) -> str:
            return "42"

    identity = VaryIdentity()
    (declared,) = identity.strings([Thing()])
    assert identity.strings([declared, 42]) != (declared, "42")
    assert identity.strings(["42", 42]) == ("42", "42")
    assert make_fragment_key("card", [declared]) != make_fragment_key("card", [Thing()])


def test_sets_and_dicts_are_keyed_in_a_stable_order() -> None:
    identity = VaryIdentity()
    assert identity.string({"b", "a"}) == identity.string({"a", "b"})
    assert identity.string({"x": 1, "y": 2}) == identity.string({"y": 2, "x": 1})
    assert identity.string(["a", "b"]) != identity.string(["a,b"])


def test_a_converter_may_refuse() -> None:
    class Draft:
        pass

    identity = VaryIdentity()
    identity.register(Draft, lambda draft: None)
    with pytest.raises(RefusedVaryValue, match="refused by its converter"):
        identity.string(Draft())


def test_long_vary_values_are_not_kept_by_the_key_caches() -> None:
    from jinja_fragcache import FragmentCache, FragmentRequest
    from jinja_fragcache.keys import _plans

    cache = FragmentCache()
    cache.render(FragmentRequest("big", ("short",), 60), lambda: "body")
    # The short variant is rightly kept: count from here.
    before = len(_key_memo), len(_plans)
    for i in range(20):
        make_fragment_key("big", ["x" * 100_000 + str(i)])
        vary = ("y" * 100_000 + str(i),)
        cache.render(FragmentRequest("big", vary, 60), lambda: "body")
    assert (len(_key_memo), len(_plans)) == before


# -- Django objects, both engines -----------------------------------------------------


@pytest.fixture
def fragments(settings: Any) -> Any:
    settings.FRAGCACHE = {"KEY_PREFIX": "id" + uuid.uuid4().hex[:10]}
    return get_fragment_cache()


def render(engine: str, source: str, **context: Any) -> str:
    if engine == "dtl":
        template = engines["django"].from_string("{% load cache_tags %}" + source)
    else:
        source = source.replace("{%", "<%").replace("%}", "%>")
        template = engines["jinja2"].from_string(source)
    return str(template.render(context))


GREETING = (
    "{% cache_fragment 300 greeting user %}Hi {{ user.pk }}{% endcache_fragment %}"
)


@pytest.mark.django_db
@pytest.mark.parametrize("engine", ["dtl", "jinja2"])
def test_a_user_named_anonymoususer_is_not_anonymous(
    engine: str, fragments: Any
) -> None:
    named = User.objects.create(username="AnonymousUser")
    assert render(engine, GREETING, user=named) == f"Hi {named.pk}"
    assert render(engine, GREETING, user=AnonymousUser()) == "Hi None"
    lazy = SimpleLazyObject(lambda: AnonymousUser())  # as request.user is
    assert render(engine, GREETING, user=lazy) == "Hi None"
    assert fragments.stats()["greeting"]["hits"] == 1
    assert fragments.identity.string(AnonymousUser()).endswith(ANONYMOUS)


@pytest.mark.django_db
@pytest.mark.parametrize("engine", ["dtl", "jinja2"])
def test_a_product_with_a_users_pk_is_not_that_user(
    engine: str, fragments: Any
) -> None:
    user = User.objects.create(username="alice")
    product = Product.objects.create(pk=user.pk, name="alice")  # same pk, str()
    source = "{% cache_fragment 300 box obj %}[{{ obj.name }}]{% endcache_fragment %}"
    assert render(engine, source, obj=user) == "[]"
    assert render(engine, source, obj=product) == "[alice]"
    assert fragments.invalidate("box", product)
    assert render(engine, source, obj=user) == "[]"
    assert fragments.stats()["box"]["hits"] == 1


@pytest.mark.django_db
def test_a_version_field_makes_a_new_key(settings: Any, fragments: Any) -> None:
    settings.FRAGCACHE = {
        **settings.FRAGCACHE,
        "VERSION_FIELDS": {"auth.user": "username"},
    }
    user = User.objects.create(username="alice")
    key = get_fragment_cache().key_for("box", user)
    user.username = "alice2"
    assert get_fragment_cache().key_for("box", user) != key


@pytest.mark.django_db
@pytest.mark.parametrize("engine", ["dtl", "jinja2"])
def test_an_unsaved_instance_is_not_cached(engine: str, fragments: Any) -> None:
    source = "{% cache_fragment 300 box obj %}{{ obj }}{% endcache_fragment %}"
    with pytest.warns(FragmentCacheWarning, match="refused"):
        assert render(engine, source, obj=Product(name="a")) == "a"
    with pytest.warns(FragmentCacheWarning, match="refused"):
        assert render(engine, source, obj=Product(name="b")) == "b"


@pytest.mark.parametrize("engine", ["dtl", "jinja2"])
def test_a_missing_vary_variable_is_not_shared(engine: str, fragments: Any) -> None:
    source = "{% cache_fragment 300 menu tenant %}{{ who }}{% endcache_fragment %}"
    with pytest.warns(FragmentCacheWarning, match="undefined"):
        assert render(engine, source, who="acme") == "acme"
    with pytest.warns(FragmentCacheWarning, match="undefined"):
        assert render(engine, source, who="globex") == "globex"


@pytest.mark.parametrize("engine", ["dtl", "jinja2"])
def test_no_identity_is_an_error_under_debug(
    engine: str, settings: Any, fragments: Any
) -> None:
    settings.DEBUG = True
    source = "\n{% cache_fragment 300 box obj %}x{% endcache_fragment %}"
    with pytest.raises(Exception, match=r"no identity.*line 2"):
        render(engine, source, obj=object())


def test_strings_of_an_iterator_keep_every_value_and_call_each_converter_once() -> None:
    # The values may come as an iterator (make_fragment_key takes any
    # iterable), and a type seen for the first time must not cost the
    # values before it; a converter that raises KeyError is its own error.
    from jinja_fragcache.identity import VaryIdentity

    identity = VaryIdentity()
    identity.strings([1])  # int seen, the next type not

    class Fresh:
        def __fragment_key__(self) -> str:
            return "fresh"

    direct = identity.strings([1, 2, Fresh(), 3])
    assert VaryIdentity().strings(iter([1, 2, Fresh(), 3])) == direct
    identity2 = VaryIdentity()
    identity2.strings([1])
    assert identity2.strings(iter([1, 2, Fresh(), 3])) == direct

    calls: list[object] = []

    class Picky:
        pass

    def picky(value: object) -> str:
        calls.append(value)
        raise KeyError("not this one")

    identity3 = VaryIdentity()
    identity3.register_raw(Picky, picky)
    for _ in range(2):  # its type resolved on the first, known on the second
        with pytest.raises(KeyError):
            identity3.strings([Picky()])
    assert len(calls) == 2  # once per call, never again by a slower path
