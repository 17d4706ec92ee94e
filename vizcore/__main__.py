from vizcore.cli import main

raise SystemExit(main())
