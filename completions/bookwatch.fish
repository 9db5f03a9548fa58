# fish completion for bookwatch -- generated from the bookwatch CLI by `python -m pgwatch_cli.completion --write`; do not edit by hand.
# Install: copy to ~/.config/fish/completions/bookwatch.fish

complete -c bookwatch -f

complete -c bookwatch -n '__fish_use_subcommand' -l debug -d 'Show tracebacks (also BOOKWATCH_DEBUG=1).'
complete -c bookwatch -n '__fish_use_subcommand' -l help -s h -d 'Show this message and exit.'
complete -c bookwatch -n '__fish_use_subcommand' -l version -d 'Show the version.'
complete -c bookwatch -n '__fish_use_subcommand' -a init-demo -d 'Create the seed\'s demo tables (bookings, guests, rooms) with data, and install triggers.'
complete -c bookwatch -n '__fish_use_subcommand' -a install-triggers -d 'Install the change-capture function and triggers (idempotent, one transaction).'
complete -c bookwatch -n '__fish_use_subcommand' -a remove-triggers -d 'Remove bookwatch triggers (all, or --table); the change log stays unless --drop-log.'
complete -c bookwatch -n '__fish_use_subcommand' -a status -d 'Show installed triggers, the change log and the notification queue.'
complete -c bookwatch -n '__fish_use_subcommand' -a tail -d 'Stream change events live: a table on a terminal, JSON lines when piped.'

# init-demo
complete -c bookwatch -n '__fish_seen_subcommand_from init-demo' -l channel -x -d 'NOTIFY channel the events are sent on.'
complete -c bookwatch -n '__fish_seen_subcommand_from init-demo' -l dsn -x -d 'PostgreSQL connection string. Default: $BOOKWATCH_DSN, $DATABASE_URL, libpq environment (PGHOST…), else the embedded server.'
complete -c bookwatch -n '__fish_seen_subcommand_from init-demo' -l embedded -d 'Use the embedded PostgreSQL even if a DSN is set.'
complete -c bookwatch -n '__fish_seen_subcommand_from init-demo' -l help -s h -d 'Show this message and exit.'
complete -c bookwatch -n '__fish_seen_subcommand_from init-demo' -l reset -d 'Drop and recreate the demo tables.'
complete -c bookwatch -n '__fish_seen_subcommand_from init-demo' -l schema -x -d 'Schema for table names given without one.'

# install-triggers
complete -c bookwatch -n '__fish_seen_subcommand_from install-triggers' -l channel -x -d 'NOTIFY channel the events are sent on.'
complete -c bookwatch -n '__fish_seen_subcommand_from install-triggers' -l dry-run -d 'Print the SQL that would run; change nothing.'
complete -c bookwatch -n '__fish_seen_subcommand_from install-triggers' -l dsn -x -d 'PostgreSQL connection string. Default: $BOOKWATCH_DSN, $DATABASE_URL, libpq environment (PGHOST…), else the embedded server.'
complete -c bookwatch -n '__fish_seen_subcommand_from install-triggers' -l durable -d 'Also append every change to bookwatch.change_log (seq, replay).'
complete -c bookwatch -n '__fish_seen_subcommand_from install-triggers' -l embedded -d 'Use the embedded PostgreSQL even if a DSN is set.'
complete -c bookwatch -n '__fish_seen_subcommand_from install-triggers' -l exclude-column -x -d 'TABLE.COLUMN whose values never leave the database.'
complete -c bookwatch -n '__fish_seen_subcommand_from install-triggers' -l help -s h -d 'Show this message and exit.'
complete -c bookwatch -n '__fish_seen_subcommand_from install-triggers' -l no-durable -d 'Also append every change to bookwatch.change_log (seq, replay).'
complete -c bookwatch -n '__fish_seen_subcommand_from install-triggers' -l schema -x -d 'Schema for table names given without one.'
complete -c bookwatch -n '__fish_seen_subcommand_from install-triggers' -l table -s t -x -d 'Table to watch (repeatable); may be schema-qualified.'

# remove-triggers
complete -c bookwatch -n '__fish_seen_subcommand_from remove-triggers' -l drop-log -d 'Also drop schema bookwatch with the change log.'
complete -c bookwatch -n '__fish_seen_subcommand_from remove-triggers' -l dry-run -d 'Print the SQL that would run; change nothing.'
complete -c bookwatch -n '__fish_seen_subcommand_from remove-triggers' -l dsn -x -d 'PostgreSQL connection string. Default: $BOOKWATCH_DSN, $DATABASE_URL, libpq environment (PGHOST…), else the embedded server.'
complete -c bookwatch -n '__fish_seen_subcommand_from remove-triggers' -l embedded -d 'Use the embedded PostgreSQL even if a DSN is set.'
complete -c bookwatch -n '__fish_seen_subcommand_from remove-triggers' -l help -s h -d 'Show this message and exit.'
complete -c bookwatch -n '__fish_seen_subcommand_from remove-triggers' -l schema -x -d 'Schema for table names given without one.'
complete -c bookwatch -n '__fish_seen_subcommand_from remove-triggers' -l table -s t -x -d 'Table to watch (repeatable); may be schema-qualified.'

# status
complete -c bookwatch -n '__fish_seen_subcommand_from status' -l dsn -x -d 'PostgreSQL connection string. Default: $BOOKWATCH_DSN, $DATABASE_URL, libpq environment (PGHOST…), else the embedded server.'
complete -c bookwatch -n '__fish_seen_subcommand_from status' -l embedded -d 'Use the embedded PostgreSQL even if a DSN is set.'
complete -c bookwatch -n '__fish_seen_subcommand_from status' -l help -s h -d 'Show this message and exit.'
complete -c bookwatch -n '__fish_seen_subcommand_from status' -l json -d 'Print one JSON object.'

# tail
complete -c bookwatch -n '__fish_seen_subcommand_from tail' -l action -s a -x -a 'DELETE INSERT UPDATE' -d 'Only this action (repeatable): INSERT, UPDATE or DELETE.'
complete -c bookwatch -n '__fish_seen_subcommand_from tail' -l actor -x -d 'Only changes made by this actor (repeatable).'
complete -c bookwatch -n '__fish_seen_subcommand_from tail' -l channel -x -d 'NOTIFY channel the events are sent on.'
complete -c bookwatch -n '__fish_seen_subcommand_from tail' -l count -x -d 'Exit after this many matching events.'
complete -c bookwatch -n '__fish_seen_subcommand_from tail' -l dsn -x -d 'PostgreSQL connection string. Default: $BOOKWATCH_DSN, $DATABASE_URL, libpq environment (PGHOST…), else the embedded server.'
complete -c bookwatch -n '__fish_seen_subcommand_from tail' -l embedded -d 'Use the embedded PostgreSQL even if a DSN is set.'
complete -c bookwatch -n '__fish_seen_subcommand_from tail' -l help -s h -d 'Show this message and exit.'
complete -c bookwatch -n '__fish_seen_subcommand_from tail' -l id -x -d 'Only the row with this primary key (repeatable).'
complete -c bookwatch -n '__fish_seen_subcommand_from tail' -l json -d 'One JSON event per line (default when piped).'
complete -c bookwatch -n '__fish_seen_subcommand_from tail' -l since -x -d 'First replay logged events with seq > SEQ.'
complete -c bookwatch -n '__fish_seen_subcommand_from tail' -l table -s t -x -d 'Only this table (repeatable); NAME or SCHEMA.NAME.'
complete -c bookwatch -n '__fish_seen_subcommand_from tail' -l timeout -x -d 'Exit after this many seconds.'
