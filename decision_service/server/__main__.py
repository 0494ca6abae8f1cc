import sys

from decision_service.server.cli import main

sys.exit(main())
