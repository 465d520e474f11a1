"""Plain (non-Lightning) subcommands of the ``sigma`` command; each module has ``main(argv) -> int``."""
