from raftloop_cli.main import main

main()
