"""The render in progress (``render_state.current``): one context variable,
set anew for each fragment's render and never changed in place."""

from __future__ import annotations

import asyncio

from jinja2 import Environment

from jinja_fragcache import FragmentCache, FragmentCacheExtension, MemoryBackend
from jinja_fragcache.entry import Entry
from jinja_fragcache.keys import variant_version_key
from jinja_fragcache.render_state import current


def leaves_in(cache: FragmentCache, name: str, *vary: object) -> set[str]:
    """The ``leaf`` fragments whose counters the entry of *name* records."""
    entry = cache.backend.get_many([cache.key_for(name, *vary)])[0]
    assert isinstance(entry, Entry), f"{name} {vary} was not stored"
    return {
        who
        for who in "ab"
        if variant_version_key(cache.key_for("leaf", who)) in entry.versions
    }


def test_tasks_sharing_a_fragments_context_keep_their_own_render_state() -> None:
    # Tasks started inside a fragment's render copy its context: each of
    # the two renders interleaved here must collect what its own fragments
    # report, and both report to the fragment around them.
    cache = FragmentCache(MemoryBackend())
    env = Environment(extensions=[FragmentCacheExtension], enable_async=True)
    env.fragment_cache = cache  # type: ignore[attr-defined]

    async def pause() -> str:
        await asyncio.sleep(0)  # the other task runs
        return ""

    inner = env.from_string(
        "{% cache_fragment 300 inner who %}({{ pause() }}"
        "{% cache_fragment 300 leaf who %}{{ pause() }}{{ who }}"
        "{% endcache_fragment %}{{ pause() }}){% endcache_fragment %}"
    )
    renders: list[str] = []

    async def both() -> str:
        renders.append("both")
        outputs = await asyncio.gather(
            *(inner.render_async(who=who, pause=pause) for who in "ab")
        )
        return "".join(outputs)

    outer = env.from_string(
        "{% cache_fragment 300 outer %}[{{ both() }}]{% endcache_fragment %}"
    )

    def render() -> str:
        return asyncio.run(outer.render_async(both=both))

    assert render() == "[(a)(b)]"
    assert current.get() is None
    assert leaves_in(cache, "inner", "a") == {"a"}
    assert leaves_in(cache, "inner", "b") == {"b"}
    assert leaves_in(cache, "outer") == {"a", "b"}
    assert render() == "[(a)(b)]"
    assert renders == ["both"]  # a hit
    cache.invalidate("leaf", "b")
    assert render() == "[(a)(b)]"
    assert renders == ["both", "both"]
