"""Executors: where attempts run (:mod:`.base` is the interface, :mod:`.local` the
built-in worker pool); picked by alias through :func:`.base.executor_class`."""
