"""The standard library's `audioop`, imported once without its DeprecationWarning.

`audioop` is deprecated since Python 3.11 and removed in 3.13, where the `audioop-lts`
package (see setup.cfg) installs a module of the same name and API. It is still the only
C implementation of G.711, channel mixing and rate conversion at hand, so every media
module takes it from here and the warning is silenced in exactly one place.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = ["audioop"]
