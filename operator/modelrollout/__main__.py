from modelrollout.cli import main

main()
