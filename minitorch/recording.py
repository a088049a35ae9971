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
* ``check(fn, args)``: ``fn(*args)`` read storages and raised nothing (a check of
  the values, such as class labels in range); a replay checks again.
* ``random(storage)``: a storage was filled from Python's ``random``; a replay
  must draw again.
* ``refresh(callback)``: ``callback()`` recomputes values the step keeps in
  storages from Python state (an optimiser's learning rate, its step count);
  a replay runs it first.
* ``grad_read(tensor, grad)`` and ``grad_set(tensor, grad)``: a tensor's ``.grad``
  was looked at (backward adds to a gradient that is there) or replaced; a
  replay leaves the gradients the recording left, and needs the ones it found.
* ``unstable(why)``: the call created state that later calls will not create
  again (an optimiser's first step): keep running eagerly and record a later call.
* ``read(storage, how)``: tensor values went to Python (``item``, ``t[i]``...);
  unless the storage still holds the constant it was made from, what the
  call does next may depend on them, which a replay cannot repeat.
* ``eager_only(why)``: the call depends on something a replay cannot repeat
  (a backend that does not report its work).
"""

from __future__ import annotations

from typing import Any

recorder: Any = None
