vcl 4.1;

# What eventfeed needs of a shared cache, whatever the backends: included
# by eventfeed.vcl (one node) and eventfeed-cluster.vcl (several). The
# comments at the top of eventfeed.vcl say what it does and why.

import std;

sub vcl_recv {
    # eventfeed sets no cookies and reads none; a cookie a browser sends
    # along (for another application on the same host) must not make every
    # read a pass.
    unset req.http.Cookie;

    # Varnish normalises the Host header and refuses HTTP/1.1 without one.
    call vcl_req_host;

    if (req.method == "PRI") {
        return (synth(405));
    }
    # Appends, deletes, metadata writes, CORS preflights: always to the
    # backend, never stored.
    if (req.method != "GET" && req.method != "HEAD") {
        return (pass);
    }

    # Persistent subscriptions: a GET hands messages out to this consumer
    # (it has side effects), so no response may ever be shared.
    if (req.url ~ "^/subscriptions(/|\?|$)") {
        return (pass);
    }

    # Server-Sent Events: an endless response. Passed straight through,
    # streamed as the backend writes it; the timeouts that would cut it are
    # lifted here (client side) and in vcl_backend_fetch (backend side).
    if (req.http.Accept ~ "(?i)text/event-stream") {
        set sess.send_timeout = 24h;
        return (pass);
    }

    call eventfeed_normalize_accept;

    # Long-polls (ES-LongPoll) are looked up like any read: a page that is
    # already complete in the cache is exactly what the long-poll would
    # return at once. When it is not, vcl_miss passes the request through
    # so it can wait at the backend (and so that no other reader queues
    # behind it).

    # IMPORTANT: the builtin vcl_recv passes every request that carries an
    # Authorization header. Several real clients send Basic credentials on
    # every request, even for public streams, which would make the cache
    # useless for them. Instead, authenticated requests are looked up in the
    # same cache as anonymous ones (vcl_hash does not hash the header), and
    # three rules keep that safe:
    #   1. vcl_hit serves a request with credentials only objects whose
    #      Cache-Control says `public` (anyone may read them); anything else
    #      goes to eventfeed, with the credentials.
    #   2. vcl_backend_response stores a response fetched with credentials
    #      only if its Cache-Control says `public`, or if it is eventfeed's
    #      304 confirming a copy that was already stored under these rules
    #      (that copy was readable by anyone when it was stored, and it is
    #      never served without a new 304 for the credentials of whoever
    #      asks). Anything else becomes a short hit-for-miss marker that is
    #      never served to anyone.
    #   3. `private` and `no-store` are never stored, whoever asked; nor is
    #      a response without caching headers.
    # The credentials are forwarded on every fetch, so eventfeed decides with
    # them whenever Varnish asks it. eventfeed marks every answer that
    # anonymous readers may not see `private` (rule 3), and checks the
    # credentials before it compares ETags, so its 304s confirm nothing to
    # someone who may not read the page.
    return (hash);
}

# One cached copy per representation instead of one per distinct Accept
# string. eventfeed sends `Vary: Accept`, so the cache stays correct with or
# without this; normalising only raises the hit rate. The rules reproduce
# eventfeed's own negotiation (highest q wins, then the most specifically
# named type, then the server's order), and whenever a header is ambiguous
# it is left untouched: eventfeed then negotiates it itself and the result
# is cached under that exact header. So normalising never changes which
# representation a client gets.
#
# Representations kept apart (their bodies or Content-Types differ):
#   application/atom+xml                    (also: no Accept, */*, application/*)
#   application/vnd.eventstore.atom+json
#   application/json                        (the same JSON, another Content-Type)
#   text/xml, application/xml               (Atom with that Content-Type for
#                                            feeds; the event's data as XML
#                                            for a single event)
#   text/html
#   application/vnd.eventstore.event+json, application/octet-stream,
#   application/vnd.eventstore.streamdesc+json (offered by some resources only)
sub eventfeed_normalize_accept {
    # Only stream feeds and events share this offer list; other resources
    # (metadata, the web UI, ...) negotiate for themselves.
    if (req.url !~ "^/streams/" || req.url ~ "^/streams/[^/?]+/metadata") {
        return;
    }
    if (!req.http.Accept || req.http.Accept ~ "^\s*$") {
        set req.http.Accept = "application/atom+xml";
        return;
    }
    # Most clients send exactly one of the canonical values: nothing to do.
    if (req.http.Accept ~ "^(application/(atom\+xml|vnd\.eventstore\.atom\+json|json|xml)|text/(xml|html))$") {
        return;
    }

    # Work on a canonical copy: lower case, no blanks, no parameters other
    # than q, `q=1` written as no q at all, ranges with q=0 removed.
    set req.http.X-Eventfeed-Accept = regsuball(std.tolower(req.http.Accept), "\s+", "");
    set req.http.X-Eventfeed-Accept = regsuball(req.http.X-Eventfeed-Accept, ";(?!q=)[^;,]*", "");
    set req.http.X-Eventfeed-Accept = regsuball(req.http.X-Eventfeed-Accept, ";q=1(\.0*)?(?=[;,]|$)", "");
    set req.http.X-Eventfeed-Accept = regsuball(req.http.X-Eventfeed-Accept, "(^|,)[^,]*;q=0(\.0*)?(?=[;,]|$)[^,]*", "");
    set req.http.X-Eventfeed-Accept = regsuball(req.http.X-Eventfeed-Accept, "^,+", "");

    # Types only some resources offer: normalise only when the client names
    # nothing else (otherwise the answer depends on the resource).
    if (req.http.X-Eventfeed-Accept ~ "^application/vnd\.eventstore\.event\+json$") {
        set req.http.Accept = "application/vnd.eventstore.event+json";
    } else if (req.http.X-Eventfeed-Accept ~ "^application/octet-stream$") {
        set req.http.Accept = "application/octet-stream";
    } else if (req.http.X-Eventfeed-Accept ~ "^application/vnd\.eventstore\.streamdesc\+json$") {
        set req.http.Accept = "application/vnd.eventstore.streamdesc+json";
    } else if (req.http.X-Eventfeed-Accept ~ "(^|,)(application/vnd\.eventstore\.(event|streamdesc)\+json|application/octet-stream)(;|,|$)") {
        # Named together with other types: leave it to eventfeed.
    } else if (req.http.X-Eventfeed-Accept ~ "(^|,)application/atom\+xml(,|$)") {
        # Named with q=1 (no q): among equals eventfeed's own order of
        # preference decides, and the checks from here on follow it.
        set req.http.Accept = "application/atom+xml";
    } else if (req.http.X-Eventfeed-Accept ~ "(^|,)application/vnd\.eventstore\.atom\+json(,|$)") {
        set req.http.Accept = "application/vnd.eventstore.atom+json";
    } else if (req.http.X-Eventfeed-Accept ~ "(^|,)application/json(,|$)") {
        set req.http.Accept = "application/json";
    } else if (req.http.X-Eventfeed-Accept ~ "(^|,)text/xml(,|$)") {
        set req.http.Accept = "text/xml";
    } else if (req.http.X-Eventfeed-Accept ~ "(^|,)application/xml(,|$)") {
        set req.http.Accept = "application/xml";
    } else if (req.http.X-Eventfeed-Accept ~ "(^|,)text/html(,|$)") {
        set req.http.Accept = "text/html";
    } else if (req.http.X-Eventfeed-Accept ~ "(^|,)(application/vnd\.eventstore\.atom\+json|application/(atom\+)?(json|xml)|text/(xml|html))(;|,|$)") {
        # Only named with q < 1: which one wins needs q-values compared
        # against each other and against wildcards. Leave it to eventfeed.
    } else if (req.http.X-Eventfeed-Accept ~ "(^|,)(\*/\*|application/\*)(;|,|$)") {
        # Only wildcards (and types eventfeed does not serve): its first
        # offer, Atom.
        set req.http.Accept = "application/atom+xml";
    } else if (req.http.X-Eventfeed-Accept ~ "(^|,)text/\*(;|,|$)") {
        set req.http.Accept = "text/xml";
    }
    # Anything else names nothing eventfeed serves: it answers 406, cached
    # under the original header (in fact not at all: errors are not stored).
    unset req.http.X-Eventfeed-Accept;
}

sub vcl_hash {
    hash_data(req.url);
    if (req.http.host) {
        hash_data(req.http.host);
    } else {
        hash_data(server.ip);
    }
    # eventfeed writes absolute links into every page, built from Host or,
    # behind a proxy, from these headers: pages fetched through different
    # front doors differ and must not share a cache entry.
    hash_data(req.http.X-Forwarded-Host);
    hash_data(req.http.X-Forwarded-Proto);
    hash_data(req.http.X-Forwarded-Port);
    hash_data(req.http.X-Forwarded-Prefix);
    # Authorization is deliberately not hashed: see vcl_recv.

    # One copy for clients that take gzip, another, stored uncompressed, for
    # those that do not (vcl_miss and vcl_backend_fetch fetch it as such):
    # otherwise Varnish would keep only the gzip copy and gunzip it again on
    # every hit for such a client, which costs far more than serving stored
    # bytes. Here Varnish has already reduced Accept-Encoding to `gzip` or
    # nothing (http_gzip_support), and it ignores `Vary: Accept-Encoding`
    # when it matches objects, so the hash is where the two must part.
    if (!req.http.Accept-Encoding) {
        hash_data("identity");
    }
    return (lookup);
}

sub vcl_hit {
    # Rule 1 (see vcl_recv).
    if (req.http.Authorization && obj.http.Cache-Control !~ "(?i)(^|,)\s*public\s*(,|$)") {
        return (pass);
    }
    # A head or partial page within the millisecond of TTL it was given
    # (see vcl_backend_response): `no-cache` means it is never served
    # without asking eventfeed, so ask (with the client's own
    # If-None-Match).
    if (obj.http.Cache-Control ~ "(?i)no-cache") {
        return (pass);
    }
    return (deliver);
}

sub vcl_miss {
    # A long-poll that the cache cannot answer waits at the backend. pass
    # (not fetch) keeps it off the waiting list other readers of the same
    # URL would queue on, and keeps its answer out of the cache.
    if (req.http.ES-LongPoll) {
        return (pass);
    }
    # Varnish asks the backend for gzip on every fetch, whatever the client
    # said: tell vcl_backend_fetch which copy this is (see vcl_hash).
    if (req.http.Accept-Encoding) {
        unset req.http.X-Eventfeed-Identity;
    } else {
        set req.http.X-Eventfeed-Identity = "1";
    }
    return (fetch);
}

sub vcl_backend_fetch {
    # The copy for clients without gzip (vcl_hash): ask eventfeed for the
    # uncompressed page, which is stored and served as it is. (Passes are
    # left alone: they forward the client's own Accept-Encoding.)
    if (bereq.http.X-Eventfeed-Identity && !bereq.uncacheable) {
        unset bereq.http.Accept-Encoding;
    }
    unset bereq.http.X-Eventfeed-Identity;

    # The backend holds a long-poll until an append or its deadline: allow
    # the requested wait plus a margin (eventfeed caps the wait at its
    # --max-long-poll-secs and then answers, so an absurd header value only
    # means Varnish waits for that answer). A malformed value gets eventfeed's
    # 400 at once, whatever the timeout.
    if (bereq.http.ES-LongPoll) {
        set bereq.first_byte_timeout = std.duration(bereq.http.ES-LongPoll + "s", 300s) + 30s;
    }
    # Server-Sent Events: the stream may stay quiet between events for as
    # long as nothing is appended.
    if (bereq.http.Accept ~ "(?i)text/event-stream") {
        set bereq.first_byte_timeout = 1h;
        set bereq.between_bytes_timeout = 24h;
    }
}

sub vcl_backend_response {
    # Which stream an object belongs to (its URL's stream segment, as sent),
    # so that a delete or a metadata write can invalidate exactly that
    # stream's objects (vcl_deliver). Removed before delivery.
    if (bereq.url ~ "^/streams/[^/?]+") {
        set beresp.http.X-Eventfeed-Stream = regsub(bereq.url, "^/streams/([^/?]+).*$", "\1");
    }

    # Errors are not cached: a 404 for a stream or event that does not exist
    # yet turns into a 200 with the next append, and a reader that appended
    # and then reads must not be shown the old 404. The hit-for-miss marker
    # only makes the next requests ordinary misses.
    if (beresp.status >= 400) {
        call eventfeed_do_not_store;
    }

    # Rule 3 (see vcl_recv), and responses eventfeed gave no caching headers
    # (Varnish would otherwise keep them for its default TTL, two minutes).
    if (beresp.http.Cache-Control ~ "(?i)(private|no-store)" ||
        (!beresp.http.Cache-Control && !beresp.http.Expires)) {
        call eventfeed_do_not_store;
    }

    # Rule 2 (see vcl_recv): with credentials, only `public` is stored, or a
    # revalidated copy that was stored before (beresp.was_304: the body is
    # the stored one, not something fetched with these credentials).
    if (bereq.http.Authorization &&
        beresp.http.Cache-Control !~ "(?i)(^|,)\s*public\s*(,|$)" &&
        !beresp.was_304) {
        call eventfeed_do_not_store;
    }

    # Head and partial pages: `max-age=0, no-cache, must-revalidate` and an
    # ETag. The builtin VCL would make them hit-for-miss, so every read
    # would fetch and render the whole page. Instead they are stored with
    # no grace and kept for an hour after they go stale: the next read
    # finds the stale copy and Varnish revalidates it with If-None-Match;
    # eventfeed answers 304 without rendering the page while nothing was
    # appended, and Varnish serves its copy.
    # The TTL is one millisecond, not zero: Varnish 7.1 does not use an
    # object stored with a zero TTL for conditional requests. vcl_hit
    # makes sure that the millisecond never serves the copy unasked.
    if (beresp.http.Cache-Control ~ "(?i)no-cache" && beresp.http.ETag) {
        set beresp.ttl = 0.001s;
        set beresp.grace = 0s;
        set beresp.keep = 1h;
        return (deliver);
    }

    # Everything else (immutable pages: a year, `public`) follows Varnish's
    # default TTL logic from Cache-Control and the builtin rules.
}

# A hit-for-miss marker: the next requests for this object are ordinary
# misses (fetched, not queued behind each other) until a cacheable response
# replaces it. Nothing is served from it.
sub eventfeed_do_not_store {
    set beresp.ttl = 1s;
    set beresp.grace = 0s;
    set beresp.uncacheable = true;
    return (deliver);
}

sub vcl_deliver {
    # eventfeed's immutable pages stop being true when a stream is deleted
    # or its metadata hides events ($maxCount, $tb, ...). When that request
    # passes through here and succeeds, every object of that stream is
    # banned (an exact match on the stream segment: no pattern, nothing to
    # escape). What this cannot see: the same change made through another
    # Varnish or straight at eventfeed, events that $maxAge hides as time
    # passes, and $all or system-stream pages that show the stream's
    # events; those stay cached until evicted, as eventfeed documents.
    if (req.url ~ "^/streams/[^/?]+" &&
        ((req.method == "DELETE" && resp.status == 204) ||
         (req.method == "POST" && req.url ~ "^/streams/[^/?]+/metadata(\?|$)" && resp.status == 201))) {
        # Unquoted: std.ban() would keep quotes as part of the value, and a
        # URL's path segment holds no blanks.
        std.ban("obj.http.X-Eventfeed-Stream == " + regsub(req.url, "^/streams/([^/?]+).*$", "\1"));
    }
    unset resp.http.X-Eventfeed-Stream;

    # Cache diagnostics for operators: HIT when served from the cache, MISS
    # when eventfeed produced (or revalidated) the body for this request.
    if (obj.hits > 0) {
        set resp.http.X-Cache = "HIT";
    } else {
        set resp.http.X-Cache = "MISS";
    }
}
