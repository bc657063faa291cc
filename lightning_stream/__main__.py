"""``python -m lightning_stream`` is the ``lightning-stream`` command."""

from lightning_stream.cli import main

raise SystemExit(main())
