"""The one private granian API the serving layer touches (granian_app._patch_worker_signals): fails as soon as a
granian release stops calling it the way the wrapper relies on, before the shutdown tests fail less clearly."""

from __future__ import annotations

import inspect


def test_wsgi_workers_set_their_signals_through_granian_signals_set_sync_signals():
    from granian import _signals
    from granian.server.mp import MPServer

    # Imported inside the worker function at call time: wrapping the module attribute before the workers start
    # is what makes each worker call the wrapper.
    source = inspect.getsource(MPServer._spawn_wsgi_worker)
    assert "from granian._signals import set_sync_signals" in source
    assert "shutdown_event = set_sync_signals()" in source
    assert inspect.signature(_signals.set_sync_signals).parameters == {}


def test_the_main_process_hooks_the_wrapper_uses_are_public():
    from granian import Granian

    for name in ("on_startup", "signal_handler_interrupt", "signal_handler_reload", "serve"):
        assert callable(getattr(Granian, name)), name
    assert {"target_loader", "wrap_loader"} <= set(inspect.signature(Granian.serve).parameters)
