"""``bookwatch simulate``: the seed's conflict story, played out on a scratch schema.

``scratch`` makes and removes the playground, ``bookings`` is how a user reads and saves,
``feed`` brings the notifications, ``strategies`` decides what a client does with them,
``seed`` and ``storm`` are the scenarios, ``report`` turns results into JSON and ``render``
into Rich tables. ``command`` runs it all.
"""

from pgwatch_cli.commands.simulate.command import Options, Scenario, new_seed, simulate

__all__ = ["Options", "Scenario", "new_seed", "simulate"]
