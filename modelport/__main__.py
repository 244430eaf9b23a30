"""`python -m modelport` runs the command line."""

from modelport.cli.main import main

main()
