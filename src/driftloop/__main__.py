from driftloop.cli import main

main()
