from ssmbench.cli import main

main()
