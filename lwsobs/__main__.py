import sys

from lwsobs.cli import main

sys.exit(main())
