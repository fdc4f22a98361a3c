import sys

try:
    from lstmcore.cli import main
except KeyboardInterrupt:  # Ctrl-C while Python imports the command
    sys.exit(130)

sys.exit(main())
