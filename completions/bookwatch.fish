# fish completion for bookwatch -- generated from the bookwatch CLI by `python -m devtools.completion --write`; do not edit by hand.
# Install: copy to ~/.config/fish/completions/bookwatch.fish

complete -c bookwatch -f

complete -c bookwatch -n '__fish_use_subcommand' -l debug -d 'Show tracebacks (also BOOKWATCH_DEBUG=1).'
complete -c bookwatch -n '__fish_use_subcommand' -l help -s h -d 'Show this message and exit.'
complete -c bookwatch -n '__fish_use_subcommand' -l version -d 'Show the version.'
complete -c bookwatch -n '__fish_use_subcommand' -a bench -d 'Measure notify latency, delivery and trigger write overhead on a scratch schema.'
complete -c bookwatch -n '__fish_use_subcommand' -a init-demo -d 'Create a hotel\'s booking tables (bookings, guests, rooms) with sample data, and install triggers on them: the README\'s story of Anna and Ben editing booking #123.'
complete -c bookwatch -n '__fish_use_subcommand' -a install-triggers -d 'Install the change-capture function and triggers (idempotent, one transaction).'
complete -c bookwatch -n '__fish_use_subcommand' -a prune -d 'Delete old events from the change log (always the oldest ones, in seq order).'
complete -c bookwatch -n '__fish_use_subcommand' -a relay -d 'Run the wal relay in the foreground (WAL -> change log) until Ctrl-C or SIGTERM.'
complete -c bookwatch -n '__fish_use_subcommand' -a remove-triggers -d 'Remove bookwatch triggers (all, or --table); the change log stays unless --drop-log.'
complete -c bookwatch -n '__fish_use_subcommand' -a serve -d 'Relay change events to browsers over Server-Sent Events (GET /events).'
complete -c bookwatch -n '__fish_use_subcommand' -a simulate -d 'Play an edit conflict three ways (baseline, refresh, merge) on a scratch schema.'
complete -c bookwatch -n '__fish_use_subcommand' -a status -d 'Show capture triggers and modes, the change log, the relay slot and the queue.'
complete -c bookwatch -n '__fish_use_subcommand' -a tail -d 'Stream change events live: a table on a terminal, JSON lines when piped.'

# bench
complete -c bookwatch -n '__fish_seen_subcommand_from bench' -l dsn -x -d 'PostgreSQL connection string (URI or key=value). Default: $BOOKWATCH_DSN, $DATABASE_URL, the libpq environment (PGHOST…), else the embedded server. Prefer the environment variables: a --dsn value is visible to other users in ps.'
complete -c bookwatch -n '__fish_seen_subcommand_from bench' -l durable -d 'Benchmark the durable trigger (change log, seq) or the plain one.'
complete -c bookwatch -n '__fish_seen_subcommand_from bench' -l duration -x -d 'Write for this many seconds instead of --events (twice: once without the trigger, once with it).'
complete -c bookwatch -n '__fish_seen_subcommand_from bench' -l embedded -d 'Use the embedded PostgreSQL even if a DSN is set.'
complete -c bookwatch -n '__fish_seen_subcommand_from bench' -l events -x -d 'Events to write in total (default 2000).'
complete -c bookwatch -n '__fish_seen_subcommand_from bench' -l help -s h -d 'Show this message and exit.'
complete -c bookwatch -n '__fish_seen_subcommand_from bench' -l hub -d 'Listeners of a process share one ChangeStream through the in-process hub, as serve does (default: one connection each).'
complete -c bookwatch -n '__fish_seen_subcommand_from bench' -l json -d 'Print one JSON object.'
complete -c bookwatch -n '__fish_seen_subcommand_from bench' -l listeners -x -d 'ChangeStream listeners (one connection each; see --hub).'
complete -c bookwatch -n '__fish_seen_subcommand_from bench' -l no-durable -d 'Benchmark the durable trigger (change log, seq) or the plain one.'
complete -c bookwatch -n '__fish_seen_subcommand_from bench' -l payload-bytes -x -d 'Approximate NOTIFY payload size per event.'
complete -c bookwatch -n '__fish_seen_subcommand_from bench' -l rate -x -d 'Events/s over all writers; 0 = as fast as possible.'
complete -c bookwatch -n '__fish_seen_subcommand_from bench' -l writers -x -d 'Writer processes (one connection each).'

# init-demo
complete -c bookwatch -n '__fish_seen_subcommand_from init-demo' -l channel -x -d 'NOTIFY channel the events are sent on.'
complete -c bookwatch -n '__fish_seen_subcommand_from init-demo' -l dsn -x -d 'PostgreSQL connection string (URI or key=value). Default: $BOOKWATCH_DSN, $DATABASE_URL, the libpq environment (PGHOST…), else the embedded server. Prefer the environment variables: a --dsn value is visible to other users in ps.'
complete -c bookwatch -n '__fish_seen_subcommand_from init-demo' -l embedded -d 'Use the embedded PostgreSQL even if a DSN is set.'
complete -c bookwatch -n '__fish_seen_subcommand_from init-demo' -l help -s h -d 'Show this message and exit.'
complete -c bookwatch -n '__fish_seen_subcommand_from init-demo' -l mode -x -a 'auto log notify wal' -d 'Capture mode: wal (WAL + relay), log (change log under a commit lock), notify (payload in NOTIFY, no log), or auto: wal where the server allows it, else log.'
complete -c bookwatch -n '__fish_seen_subcommand_from init-demo' -l reset -d 'Drop and recreate the demo tables.'
complete -c bookwatch -n '__fish_seen_subcommand_from init-demo' -l schema -x -d 'Schema for table names given without one.'

# install-triggers
complete -c bookwatch -n '__fish_seen_subcommand_from install-triggers' -l channel -x -d 'NOTIFY channel the events are sent on.'
complete -c bookwatch -n '__fish_seen_subcommand_from install-triggers' -l dry-run -d 'Say what would change and print the SQL that would run; change nothing.'
complete -c bookwatch -n '__fish_seen_subcommand_from install-triggers' -l dsn -x -d 'PostgreSQL connection string (URI or key=value). Default: $BOOKWATCH_DSN, $DATABASE_URL, the libpq environment (PGHOST…), else the embedded server. Prefer the environment variables: a --dsn value is visible to other users in ps.'
complete -c bookwatch -n '__fish_seen_subcommand_from install-triggers' -l durable -d 'Older spellings of --mode auto and --mode notify.'
complete -c bookwatch -n '__fish_seen_subcommand_from install-triggers' -l embedded -d 'Use the embedded PostgreSQL even if a DSN is set.'
complete -c bookwatch -n '__fish_seen_subcommand_from install-triggers' -l exclude-column -x -d 'A column whose values never leave the database (repeatable).'
complete -c bookwatch -n '__fish_seen_subcommand_from install-triggers' -l help -s h -d 'Show this message and exit.'
complete -c bookwatch -n '__fish_seen_subcommand_from install-triggers' -l mode -x -a 'auto log notify wal' -d 'Capture mode: wal (WAL + relay), log (change log under a commit lock), notify (payload in NOTIFY, no log), or auto: wal where the server allows it, else log.'
complete -c bookwatch -n '__fish_seen_subcommand_from install-triggers' -l no-durable -d 'Older spellings of --mode auto and --mode notify.'
complete -c bookwatch -n '__fish_seen_subcommand_from install-triggers' -l retention -x -d 'How long the change log keeps events, e.g. 7d, 12h (stored in the database; default 7d when first installed).'
complete -c bookwatch -n '__fish_seen_subcommand_from install-triggers' -l schema -x -d 'Schema for table names given without one.'
complete -c bookwatch -n '__fish_seen_subcommand_from install-triggers' -l table -s t -x -d 'Capture this table (repeatable; default: bookings, guests, rooms); NAME or SCHEMA.NAME.'

# prune
complete -c bookwatch -n '__fish_seen_subcommand_from prune' -l dry-run -d 'Say how many events would go; delete nothing.'
complete -c bookwatch -n '__fish_seen_subcommand_from prune' -l dsn -x -d 'PostgreSQL connection string (URI or key=value). Default: $BOOKWATCH_DSN, $DATABASE_URL, the libpq environment (PGHOST…), else the embedded server. Prefer the environment variables: a --dsn value is visible to other users in ps.'
complete -c bookwatch -n '__fish_seen_subcommand_from prune' -l embedded -d 'Use the embedded PostgreSQL even if a DSN is set.'
complete -c bookwatch -n '__fish_seen_subcommand_from prune' -l help -s h -d 'Show this message and exit.'
complete -c bookwatch -n '__fish_seen_subcommand_from prune' -l keep-last -x -d 'Delete all but the newest N events.'
complete -c bookwatch -n '__fish_seen_subcommand_from prune' -l older-than -x -d 'Delete events logged longer ago than this, e.g. 7d, 12h.'

# relay
complete -c bookwatch -n '__fish_seen_subcommand_from relay' -l dsn -x -d 'PostgreSQL connection string (URI or key=value). Default: $BOOKWATCH_DSN, $DATABASE_URL, the libpq environment (PGHOST…), else the embedded server. Prefer the environment variables: a --dsn value is visible to other users in ps.'
complete -c bookwatch -n '__fish_seen_subcommand_from relay' -l embedded -d 'Use the embedded PostgreSQL even if a DSN is set.'
complete -c bookwatch -n '__fish_seen_subcommand_from relay' -l help -s h -d 'Show this message and exit.'

# remove-triggers
complete -c bookwatch -n '__fish_seen_subcommand_from remove-triggers' -l drop-log -d 'Also drop schema bookwatch with the change log.'
complete -c bookwatch -n '__fish_seen_subcommand_from remove-triggers' -l dry-run -d 'Say what would change and print the SQL that would run; change nothing.'
complete -c bookwatch -n '__fish_seen_subcommand_from remove-triggers' -l dsn -x -d 'PostgreSQL connection string (URI or key=value). Default: $BOOKWATCH_DSN, $DATABASE_URL, the libpq environment (PGHOST…), else the embedded server. Prefer the environment variables: a --dsn value is visible to other users in ps.'
complete -c bookwatch -n '__fish_seen_subcommand_from remove-triggers' -l embedded -d 'Use the embedded PostgreSQL even if a DSN is set.'
complete -c bookwatch -n '__fish_seen_subcommand_from remove-triggers' -l help -s h -d 'Show this message and exit.'
complete -c bookwatch -n '__fish_seen_subcommand_from remove-triggers' -l schema -x -d 'Schema for table names given without one.'
complete -c bookwatch -n '__fish_seen_subcommand_from remove-triggers' -l table -s t -x -d 'Remove only this table\'s trigger (repeatable; default: every table\'s); NAME or SCHEMA.NAME.'

# serve
complete -c bookwatch -n '__fish_seen_subcommand_from serve' -l allow-origin -x -d 'Let pages from this origin use the server (CORS; repeatable).'
complete -c bookwatch -n '__fish_seen_subcommand_from serve' -l channel -x -d 'NOTIFY channel the events are sent on.'
complete -c bookwatch -n '__fish_seen_subcommand_from serve' -l client-buffer -x -d 'Bytes a slow client may fall behind before it is reset.'
complete -c bookwatch -n '__fish_seen_subcommand_from serve' -l demo -d 'Serve a demo booking editor at / on the init-demo tables (needs init-demo).'
complete -c bookwatch -n '__fish_seen_subcommand_from serve' -l dsn -x -d 'PostgreSQL connection string (URI or key=value). Default: $BOOKWATCH_DSN, $DATABASE_URL, the libpq environment (PGHOST…), else the embedded server. Prefer the environment variables: a --dsn value is visible to other users in ps.'
complete -c bookwatch -n '__fish_seen_subcommand_from serve' -l embedded -d 'Use the embedded PostgreSQL even if a DSN is set.'
complete -c bookwatch -n '__fish_seen_subcommand_from serve' -l heartbeat -x -d 'Seconds between heartbeat comments on idle streams.'
complete -c bookwatch -n '__fish_seen_subcommand_from serve' -l help -s h -d 'Show this message and exit.'
complete -c bookwatch -n '__fish_seen_subcommand_from serve' -l host -x -d 'Address to listen on (non-loopback needs --token).'
complete -c bookwatch -n '__fish_seen_subcommand_from serve' -l insecure -d 'Allow a non-loopback --host without a token.'
complete -c bookwatch -n '__fish_seen_subcommand_from serve' -l max-clients -x -d 'Open streams per process; beyond them 503 with Retry-After.'
complete -c bookwatch -n '__fish_seen_subcommand_from serve' -l max-lag -x -d 'Reset clients instead of relaying events older than this (0: never).'
complete -c bookwatch -n '__fish_seen_subcommand_from serve' -l port -x -d 'Port to listen on (0: any free).'
complete -c bookwatch -n '__fish_seen_subcommand_from serve' -l schema -x -d 'Schema of the demo tables (with --demo).'
complete -c bookwatch -n '__fish_seen_subcommand_from serve' -l token -x -d 'Require this bearer token (header, or ?token= for EventSource). Prefer $BOOKWATCH_TOKEN: a --token value is visible to other users in ps.'
complete -c bookwatch -n '__fish_seen_subcommand_from serve' -l workers -x -d 'Processes serving the port (auto: one per CPU).'

# simulate
complete -c bookwatch -n '__fish_seen_subcommand_from simulate' -l bookings -x -d 'storm: how many bookings they share (default 3).'
complete -c bookwatch -n '__fish_seen_subcommand_from simulate' -l dsn -x -d 'PostgreSQL connection string (URI or key=value). Default: $BOOKWATCH_DSN, $DATABASE_URL, the libpq environment (PGHOST…), else the embedded server. Prefer the environment variables: a --dsn value is visible to other users in ps.'
complete -c bookwatch -n '__fish_seen_subcommand_from simulate' -l embedded -d 'Use the embedded PostgreSQL even if a DSN is set.'
complete -c bookwatch -n '__fish_seen_subcommand_from simulate' -l help -s h -d 'Show this message and exit.'
complete -c bookwatch -n '__fish_seen_subcommand_from simulate' -l json -d 'Print one JSON object.'
complete -c bookwatch -n '__fish_seen_subcommand_from simulate' -l random-seed -x -d 'Make the users\' choices reproducible (default: random, and printed).'
complete -c bookwatch -n '__fish_seen_subcommand_from simulate' -l rounds -x -d 'storm: edits per user (default 10).'
complete -c bookwatch -n '__fish_seen_subcommand_from simulate' -l scenario -x -a 'seed storm' -d 'seed: the README\'s story, Anna and Ben editing hotel booking #123 at once; storm: many users editing a few bookings.'
complete -c bookwatch -n '__fish_seen_subcommand_from simulate' -l think-ms -x -d 'storm: mean think time per edit, in ms (default 300).'
complete -c bookwatch -n '__fish_seen_subcommand_from simulate' -l users -x -d 'storm: simulated users, one connection each (default 8).'

# status
complete -c bookwatch -n '__fish_seen_subcommand_from status' -l dsn -x -d 'PostgreSQL connection string (URI or key=value). Default: $BOOKWATCH_DSN, $DATABASE_URL, the libpq environment (PGHOST…), else the embedded server. Prefer the environment variables: a --dsn value is visible to other users in ps.'
complete -c bookwatch -n '__fish_seen_subcommand_from status' -l embedded -d 'Use the embedded PostgreSQL even if a DSN is set.'
complete -c bookwatch -n '__fish_seen_subcommand_from status' -l help -s h -d 'Show this message and exit.'
complete -c bookwatch -n '__fish_seen_subcommand_from status' -l json -d 'Print one JSON object.'

# tail
complete -c bookwatch -n '__fish_seen_subcommand_from tail' -l action -s a -x -a 'DELETE INSERT UPDATE' -d 'Only this action (repeatable): INSERT, UPDATE or DELETE.'
complete -c bookwatch -n '__fish_seen_subcommand_from tail' -l actor -x -d 'Only changes made by this actor (repeatable).'
complete -c bookwatch -n '__fish_seen_subcommand_from tail' -l channel -x -d 'NOTIFY channel the events are sent on.'
complete -c bookwatch -n '__fish_seen_subcommand_from tail' -l count -x -d 'Exit after this many matching events.'
complete -c bookwatch -n '__fish_seen_subcommand_from tail' -l dsn -x -d 'PostgreSQL connection string (URI or key=value). Default: $BOOKWATCH_DSN, $DATABASE_URL, the libpq environment (PGHOST…), else the embedded server. Prefer the environment variables: a --dsn value is visible to other users in ps.'
complete -c bookwatch -n '__fish_seen_subcommand_from tail' -l embedded -d 'Use the embedded PostgreSQL even if a DSN is set.'
complete -c bookwatch -n '__fish_seen_subcommand_from tail' -l help -s h -d 'Show this message and exit.'
complete -c bookwatch -n '__fish_seen_subcommand_from tail' -l id -x -d 'Only the row with this primary key (repeatable).'
complete -c bookwatch -n '__fish_seen_subcommand_from tail' -l json -d 'One JSON event per line (default when piped).'
complete -c bookwatch -n '__fish_seen_subcommand_from tail' -l no-relay -d 'Never relay the WAL from this process (wal mode: another process must run the relay).'
complete -c bookwatch -n '__fish_seen_subcommand_from tail' -l since -x -d 'First replay logged events with seq > SEQ.'
complete -c bookwatch -n '__fish_seen_subcommand_from tail' -l table -s t -x -d 'Only this table (repeatable); NAME or SCHEMA.NAME.'
complete -c bookwatch -n '__fish_seen_subcommand_from tail' -l timeout -x -d 'Exit after this many seconds.'
