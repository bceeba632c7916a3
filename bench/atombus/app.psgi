# AtomBus as its documentation deploys it (a Dancer app served by any Plack
# server), configured with `set` instead of a config.yml: a SQLite database
# at $ATOMBUS_DB, pages of 20 entries (eventfeed's page size), errors only.
use strict;
use warnings;
use Dancer ':syntax';

set environment => 'production';
set logger      => 'console';
set log         => 'error';
set warnings    => 0;
set show_errors => 0;
set route_cache => 1;
set apphandler  => 'PSGI';
set atombus     => {
    page_size => 20,
    db        => { dsn => "dbi:SQLite:dbname=$ENV{ATOMBUS_DB}" },
};

# AtomBus reads its configuration when it is loaded: load it after `set`.
require AtomBus;
dance;
