from rlm_cli import main

raise SystemExit(main())
