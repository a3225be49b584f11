"""ptycho-k3 as a ptychodus reconstructor library (``pip install 'ptycho-k3[ptychodus]'``).

Modules: :mod:`.convert` (ptychodus positions, pixel geometry, bad pixels and objects to and from
ptycho-k3's conventions, docs/conventions.md §16), :mod:`.settings` (the ``PtychoK3`` settings
group), :mod:`.reconstructors` (the reconstructors; each runs a ptycho-k3 command in a child
process with ``KERAS_BACKEND`` from the settings), :mod:`.library` (the library ptychodus lists),
:mod:`.launcher` (``ptycho-k3-ptychodus``: registers the library, then runs ptychodus's own
``main``) and :mod:`.plugin` (the optional ``ptychodus/plugins/`` hook). Nothing here imports
ptychodus or Keras at import time.
"""

#: The library's name in ptychodus; algorithm keys are ``ptycho-k3_<reconstructor>``.
LIBRARY_NAME = "ptycho-k3"
