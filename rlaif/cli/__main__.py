from rlaif.cli.main import main

main()
