"""The bus between one database and many ``serve`` replicas: ``--bus redis://HOST:PORT/DB``.

One publisher per database (elected through PostgreSQL, lease.py) follows the change log and
writes each batch to a Redis Stream per channel (publisher.py); every replica reads that
stream instead of the log (subscriber.py), and shares presence through Redis (presence.py).
The change log stays the truth: a replica goes to it only to start, to cross a gap, or while
Redis is down. ``serve`` reaches all of this through hooks.py.
"""
