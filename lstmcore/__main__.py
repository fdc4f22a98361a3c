import sys

from lstmcore.cli import main

sys.exit(main())
