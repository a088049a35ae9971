"""The hook through which tensor code reports its work while ``minitorch.compile`` records.

``recorder`` is None except while a compiled function runs its recording call;
every hook site costs one check of it. The recorder itself (``compile.Recorder``)
sits above tensors and optimisers in the layer order, so this module imports
nothing: the code that reports (backends, tensors, optimisers) only needs the
names below.

What a recorder is told:

* ``launch(kernel, args)``: a compiled kernel (or a Python function over
  storages) ran with these arguments; it writes its first argument.
* ``fill(storage, value)``: a storage was set to one value.
* ``constant(storage)``: a storage was filled from host values that do not
  change between calls (a number turned into a tensor).
* ``copy(dst, src)``: ``dst[:] = src`` between same-size storages.
* ``random(storage)``: a storage was filled from Python's ``random``; a replay
  must draw again.
* ``refresh(callback)``: ``callback()`` recomputes values the step keeps in
  storages from Python state (an optimiser's learning rate, its step count);
  a replay runs it first.
* ``unstable(why)``: the call created state that later calls will not create
  again (an optimiser's first step): keep running eagerly and record a later call.
* ``eager_only(why)``: the call depends on something a replay cannot repeat
  (tensor values read into Python, a backend that does not report its work).
"""

from __future__ import annotations

from typing import Any

recorder: Any = None
