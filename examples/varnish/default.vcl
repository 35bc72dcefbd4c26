# Varnish 7 in front of a Django site that uses jinja-fragcache's
# SurrogateKeyMiddleware with FRAGCACHE["SURROGATE_KEYS"] = {"HEADER": "xkey"}
# and FRAGCACHE["PURGE"] = {"BACKEND": "varnish", "URLS": ["http://127.0.0.1:6081/"]}.
#
# Needs vmod xkey (Debian: apt-get install varnish varnish-modules).
# Pages are cached as the backend says; responses with Cache-Control
# private/no-store/no-cache or a Set-Cookie are passed (Varnish's builtin
# rules, kept below), and so are requests with a Cookie or Authorization.
# A PURGE with an xkey-purge header, from an address in the purgers ACL,
# removes every object that listed one of those keys in its xkey header.
vcl 4.1;

import xkey;

# The Django site (gunicorn, uwsgi...). The port is the one to edit.
backend default {
    .host = "127.0.0.1";
    .port = "8000";
}

# Who may purge: the web servers themselves. Never the Internet.
acl purgers {
    "127.0.0.1";
    "::1";
}

sub vcl_recv {
    if (req.method == "PURGE") {
        if (client.ip !~ purgers) {
            return (synth(403, "Forbidden"));
        }
        if (!req.http.xkey-purge) {
            return (synth(400, "No xkey-purge header"));
        }
        # A hard purge: the objects are gone, never served stale.
        set req.http.n-gone = xkey.purge(req.http.xkey-purge);
        return (synth(200, "Purged " + req.http.n-gone + " objects"));
    }
    # No return: Varnish's builtin vcl_recv passes requests with a Cookie
    # or an Authorization header, and anything but GET and HEAD.
}

sub vcl_backend_response {
    # No return either: the builtin vcl_backend_response makes responses
    # with Set-Cookie, Cache-Control private/no-cache/no-store or Vary: *
    # uncacheable (hit-for-miss), so a page for one visitor is never shared.
}

sub vcl_deliver {
    # The keys are for Varnish, not for browsers.
    unset resp.http.xkey;
}
