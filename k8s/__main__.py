import sys

from k8s.cli import main

sys.exit(main())
