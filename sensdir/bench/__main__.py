from sensdir.bench.cli import main

main()
