"""The command line: argv to Options (nc's getopt and words), ``run()`` for
library callers and ``main()`` for the ``pync`` command.  The top layer:
it picks the mode, and is the one place errors become exit statuses."""
