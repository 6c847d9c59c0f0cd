import sys

from kdrecon.cli import main

sys.exit(main())
