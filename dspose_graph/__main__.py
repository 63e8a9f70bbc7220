from dspose_graph.cli.main import main

raise SystemExit(main())
