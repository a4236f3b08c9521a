from chexops.cli import main

main()
