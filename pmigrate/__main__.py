import sys

from pmigrate.cli import main

sys.exit(main())
