"""Who a request comes from, and whether it may do what it asks.

One small interface (``access``): an :class:`AccessController` answers whether an
:class:`Identity` may do the actions of a :class:`Scope`. Authentication has one
module per scheme (``htpasswd`` for Basic, ``token`` for Bearer), each handing out a
:class:`~.challenge.Challenge` that writes its own ``WWW-Authenticate`` header; the
policy (``acl``) is data kept apart from the code that enforces it (``wsgi``, the
pipeline's layers); ``settings`` reads it all from the environment.
"""

from .access import AccessController, Identity, Scope
from .settings import SecuritySettings

__all__ = ["AccessController", "Identity", "Scope", "SecuritySettings"]
