import sys

from lwsobs.app.cli import main

sys.exit(main())
