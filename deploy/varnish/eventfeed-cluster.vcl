vcl 4.1;

# Varnish in front of several eventfeed nodes on one PostgreSQL database
# (docs/scaling-out.md). The caching rules are eventfeed.vcl's, from
# eventfeed-rules.vcl next to this file; what this file adds is the nodes,
# a health probe for each, and a director that spreads requests over the
# healthy ones.
#
# Any node may answer any request: every node renders the same bytes
# under the same ETags for the same history, so a page cached from one
# node revalidates against another, and a long-poll waiting on one is
# woken by an append on any other (LISTEN/NOTIFY through the database).
#
# The probe asks /health/ready, which turns 503 when a node starts a
# graceful shutdown (its --shutdown-drain-secs), when its appends are
# refused (disk floor, failed commit) and when its database is not a
# reachable primary: the node stops getting requests before it stops
# serving them. Two failed probes of three mark a node sick; one good
# probe in the next three brings it back.
#
# Run it with, for example:
#   varnishd -F -a 127.0.0.1:6081 -f /etc/varnish/eventfeed-cluster.vcl -s malloc,1g
# with the nodes' --bind addresses below.

import directors;

probe eventfeed_ready {
    .request =
        "GET /health/ready HTTP/1.1"
        "Host: eventfeed"
        "Connection: close";
    .expected_response = 200;
    .interval = 1s;
    .timeout = 1s;
    .window = 3;
    .threshold = 2;
    .initial = 2;
}

backend node1 {
    .host = "127.0.0.1";
    .port = "2113";
    .probe = eventfeed_ready;
    .connect_timeout = 2s;
    .first_byte_timeout = 60s;
    .between_bytes_timeout = 60s;
}

backend node2 {
    .host = "127.0.0.1";
    .port = "2114";
    .probe = eventfeed_ready;
    .connect_timeout = 2s;
    .first_byte_timeout = 60s;
    .between_bytes_timeout = 60s;
}

sub vcl_init {
    new nodes = directors.round_robin();
    nodes.add_backend(node1);
    nodes.add_backend(node2);
}

sub vcl_recv {
    set req.backend_hint = nodes.backend();
}

include "./eventfeed-rules.vcl";
