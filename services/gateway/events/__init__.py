"""Registry events for webhooks, in the reference registry's notification format.

Routes call the one-line helpers in ``emit`` after a successful operation; ``emit`` builds the event
(``envelope``) and hands it to the ``EventBus`` (``bus``), which filters it by each endpoint's ignore
rules and appends it to that endpoint's bounded queue (``endpoints``). Each endpoint's worker POSTs
envelopes in order, retrying with backoff. Nothing here waits on the network inside a request, and
nothing here raises into one: a webhook that is slow or down never slows or fails a push.
"""

from services.gateway.events.bus import EventBus, configured_endpoints
from services.gateway.events.stats import EndpointStats

__all__ = ["EndpointStats", "EventBus", "configured_endpoints"]
