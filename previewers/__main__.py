import sys

from previewers.cli import main

sys.exit(main())
