import sys

from swift_ssid.cli.main import main

sys.exit(main())
