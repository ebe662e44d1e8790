from nnprobe.cli import main

main()
