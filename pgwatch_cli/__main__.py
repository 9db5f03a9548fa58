from pgwatch_cli.cli import main

main()
