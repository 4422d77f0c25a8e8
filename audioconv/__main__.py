import sys

from audioconv.cli import main

sys.exit(main())
