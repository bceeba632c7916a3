vcl 4.1;

# Varnish in front of eventfeed (written for Varnish 7.1, Debian 12's
# `varnish` package; VCL 4.1 syntax).
#
# eventfeed says in its own Cache-Control headers what may be cached:
#
#   * immutable pages and single events: `max-age=31536000, public`
#     -> cached for a year, every later read is a hit;
#   * head pages and partial pages: `max-age=0, no-cache, must-revalidate`
#     plus an ETag -> kept, but never served without asking eventfeed,
#     which answers `304 Not Modified` (no body) while the ETag holds;
#   * anything a stream's ACL hides from anonymous readers: `private`
#     -> never stored here.
#
# This file adds what a shared cache needs on top of that: one cached copy
# per representation (Accept is normalised) and per encoding (gzip or
# none, so that no hit is gunzipped), a key that includes every
# request header eventfeed builds links from, long-polls and Server-Sent
# Events passed through without timeouts cutting them, no cookies, no cached
# errors, and Basic-authenticated readers served from the cache only for
# what eventfeed marked `public`.
#
# Run it with, for example:
#   varnishd -F -a 127.0.0.1:6081 -f /etc/varnish/eventfeed.vcl -s malloc,256m
# with eventfeed-rules.vcl next to it (included below), and point the
# backend below at eventfeed's --bind address. Several eventfeed nodes:
# eventfeed-cluster.vcl.

backend eventfeed {
    .host = "127.0.0.1";
    .port = "2113";
    .connect_timeout = 2s;
    # Ordinary reads answer in milliseconds; long-polls and SSE streams set
    # their own, longer timeouts per request (vcl_backend_fetch).
    .first_byte_timeout = 60s;
    .between_bytes_timeout = 60s;
}

# The rules, from the file next to this one.
include "./eventfeed-rules.vcl";
